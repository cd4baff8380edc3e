// ExpertShard (see expert_shard.h).
#include "moe/expert_shard.h"

#include <string>

#include "core/error.h"

namespace moepp {

std::pair<int64_t, int64_t> ExpertShard::range(int64_t n_ffn) const {
  check(count >= 1 && index >= 0 && index < count,
        "expert shard " + std::to_string(index) + " of " + std::to_string(count) + " does not exist");
  check(n_ffn % count == 0, "expert parallelism: " + std::to_string(n_ffn) +
                                " FFN experts cannot be split evenly over " + std::to_string(count) +
                                " ranks (--ep-size must divide the FFN expert count)");
  const int64_t per = n_ffn / count;
  return {index * per, (index + 1) * per};
}

}  // namespace moepp
