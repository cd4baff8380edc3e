// unpickle_state_dict: a RESTRICTED unpickler for the data.pkl of a torch.save checkpoint. It knows
// only the opcodes a state_dict of tensors needs and only the globals torch writes for one
// (collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter[_with_state],
// and the storage classes torch.{Float,Half,BFloat16,Int,Long}Storage). It never calls or imports
// anything: the "globals" are names that the interpreter matches. Any other opcode or global is an
// error. Every fault is a moepp::Error whose message starts with the `source` given; nothing here reads
// out of bounds or crashes on bad input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/dtype.h"

namespace moepp::io {

// A tensor of a state_dict as the pickle describes it: a view (offset, sizes, strides, in elements)
// of a storage, whose bytes are the archive entry <prefix>/data/<storage_key>.
struct TorchTensorRef {
  DType dtype = DType::kF32;       // the storage's element type
  std::string storage_key;
  int64_t storage_numel = 0;       // elements the pickle says the storage holds
  int64_t storage_offset = 0;
  std::vector<int64_t> shape, stride;
};

// Runs the restricted unpickler on `data` (the archive's data.pkl) and returns {name: tensor} of the
// state_dict it builds (a dict or OrderedDict of str -> tensor; a BUILD of OrderedDict attributes such
// as state_dict()._metadata is accepted and ignored). Checks: every opcode known and in bounds,
// protocol <= 5, globals whitelisted, storages (same key = same storage) consistent, views valid
// (sizes and strides of equal rank, non-negative, the view within storage_numel, no overflow), keys
// strings, values tensors, no duplicate keys. Errors: "<source>: unsupported pickle opcode 0x.. at
// offset N", "<source>: global X.Y is not allowed", ...
std::map<std::string, TorchTensorRef> unpickle_state_dict(const uint8_t* data, size_t size,
                                                          const std::string& source);

}  // namespace moepp::io
