// Learning-rate schedule: linear warmup from init_lr to peak_lr over warmup_steps, then cosine (or
// linear) decay to min_lr at total_steps, constant after.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

namespace moepp {

struct LrSchedule {
  float init_lr = 1e-7f, peak_lr = 5e-4f, min_lr = 5e-5f;
  int64_t warmup_steps = 2000, total_steps = 100000;
  bool cosine = true;  // false: linear decay

  // lr for optimiser step `step` (0-based).
  float at(int64_t step) const {
    if (step < warmup_steps)
      return init_lr + (peak_lr - init_lr) * static_cast<float>(step + 1) / static_cast<float>(warmup_steps);
    const int64_t span = total_steps - warmup_steps;
    if (span <= 0 || step >= total_steps) return min_lr;
    const double frac = static_cast<double>(step - warmup_steps) / static_cast<double>(span);
    const double shape = cosine ? 0.5 * (1.0 + std::cos(M_PI * frac)) : 1.0 - frac;
    return static_cast<float>(min_lr + (peak_lr - min_lr) * shape);
  }
};

}  // namespace moepp
