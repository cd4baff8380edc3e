// WeightSource: read access to the tensors of a model checkpoint, whatever its format, one tensor at a
// time (so that a large model can be converted tensor by tensor without holding it all in fp32):
//   model.safetensors | model.safetensors.index.json (shards) | pytorch_model.bin |
//   pytorch_model.bin.index.json (shards of PyTorch zip pickles, read by the restricted unpickler of
//   io/unpickler.h). Sources are F32, F16 or BF16. Every fault names the file and the tensor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace moepp::io {

struct WeightInfo {
  DType dtype;
  std::vector<int64_t> shape;
};

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The file (or index) the weights come from, for messages.
  virtual const std::string& source() const = 0;
  virtual std::vector<std::string> names() const = 0;  // sorted
  virtual bool contains(const std::string& name) const = 0;
  virtual WeightInfo info(const std::string& name) const = 0;  // throws when absent
  // The tensor converted to fp32 into out (info(name).shape elements). Throws moepp::Error naming the
  // file and tensor on absence, an unsupported dtype or a truncated file.
  virtual void read_f32(const std::string& name, float* out) const = 0;
  // The stored bytes when they are contiguous in a memory mapping (safetensors), else nullptr.
  virtual const uint8_t* mapped(const std::string& name) const = 0;
};

// Opens the weights in directory `dir`, trying in order model.safetensors, model.safetensors.index.json,
// pytorch_model.bin, pytorch_model.bin.index.json. Throws moepp::Error when none is there.
std::unique_ptr<WeightSource> open_weights(const std::string& dir);

}  // namespace moepp::io
