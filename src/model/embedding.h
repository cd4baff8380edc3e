// Token embedding lookup and its backward (scatter-add of the output gradient into the table rows).
#pragma once

#include <cstdint>

namespace moepp {

// out [N, D]; tokens [N] (ids already checked < V); table [V, D].
void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t D);

// dtable [V, D] accumulated (+=); dout [N, D]; tokens [N].
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N, int64_t D);

}  // namespace moepp
