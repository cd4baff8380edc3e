// log_prob: the log-probability of one token under a row of logits, log softmax(logits)[target],
// computed in double (max-subtracted sum of exponentials) so that summing thousands of them for a
// perplexity or a multiple-choice log-likelihood loses nothing to fp32 rounding.
#pragma once

#include <cstdint>

namespace moepp::eval {

// Returns log p(target) for logits [V]. Throws moepp::Error when target is outside [0, V).
double log_prob(const float* logits, int64_t V, int32_t target);

}  // namespace moepp::eval
