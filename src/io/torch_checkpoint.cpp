// TorchCheckpoint (see torch_checkpoint.h): one mapped .bin file, its zip entries found, its pickle
// unpickled, its storages checked, and tensors read as fp32 (strided views gathered) or mapped.
#include "io/torch_checkpoint.h"

#include <bit>
#include <cstring>

#include "core/error.h"
#include "core/half_float.h"
#include "core/little_endian.h"
#include "core/tensor.h"
#include "io/dtype.h"
#include "io/quoted_name.h"
#include "io/zip_archive.h"

static_assert(std::endian::native == std::endian::little, "the checkpoint reader assumes a little-endian host");

namespace moepp::io {

bool is_contiguous(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride) {
  if (shape.size() != stride.size()) return false;
  for (int64_t d : shape)
    if (d == 0) return true;
  int64_t expect = 1;
  for (size_t k = shape.size(); k-- > 0;) {
    if (shape[k] != 1 && stride[k] != expect) return false;
    expect *= shape[k];
  }
  return true;
}

namespace {

// Converts n elements into fp32: element k is at base + (first + k * step) * element size.
void gather_f32(DType dt, const uint8_t* base, uint64_t first, int64_t step, size_t n, float* out) {
  const uint64_t st = static_cast<uint64_t>(step);
  switch (dt) {
    case DType::kF32:
      if (step == 1) {
        std::memcpy(out, base + first * 4, n * 4);
      } else {
        for (size_t k = 0; k < n; ++k) std::memcpy(out + k, base + (first + st * k) * 4, 4);
      }
      return;
    case DType::kBF16:
      for (size_t k = 0; k < n; ++k) out[k] = bf16_to_f32(load_le16(base + (first + st * k) * 2));
      return;
    case DType::kF16:
      for (size_t k = 0; k < n; ++k) out[k] = f16_to_f32(load_le16(base + (first + st * k) * 2));
      return;
    default:
      return;  // callers check the dtype
  }
}

}  // namespace

TorchCheckpoint::TorchCheckpoint(const std::string& path) : path_(path) {
  map_ = map_file_readonly(path, "PyTorch checkpoint");
  try {
    if (map_.size >= 2 && map_.data[0] == 0x80 && map_.data[1] <= 5)
      throw Error(path_ + ": a legacy (pre-zip, torch < 1.6) torch.save file; only the zip format is supported "
                  "(re-save it with a recent torch, or convert it to safetensors)");
    if (!has_zip_signature(map_.data, map_.size))
      throw Error(path_ + ": not a PyTorch zip checkpoint (no zip signature at the start)");
    const ZipArchive zip(map_.data, map_.size, path_);

    // The one <prefix>/data.pkl.
    const ZipEntry* pkl = nullptr;
    std::string prefix;
    for (const ZipEntry& e : zip.entries()) {
      const size_t slash = e.name.find('/');
      if (slash == std::string::npos || e.name.compare(slash, std::string::npos, "/data.pkl") != 0) continue;
      if (pkl)
        throw Error(path_ + ": the zip archive holds two pickles (" + quoted_name(pkl->name) + ", " +
                    quoted_name(e.name) + ")");
      pkl = &e;
      prefix = e.name.substr(0, slash);
    }
    if (!pkl) throw Error(path_ + ": the zip archive has no <name>/data.pkl entry: not a torch.save checkpoint");
    if (const ZipEntry* bo = zip.find(prefix + "/byteorder")) {
      const uint8_t* b = zip.data(*bo);
      const std::string order(reinterpret_cast<const char*>(b), static_cast<size_t>(bo->size));
      if (order != "little")
        throw Error(path_ + ": byte order " + quoted_name(order) + " is not supported (only little)");
    }
    const uint8_t* pdata = zip.data(*pkl, /*verify_crc=*/true);
    const std::map<std::string, TorchTensorRef> refs =
        unpickle_state_dict(pdata, static_cast<size_t>(pkl->size), path_ + " (" + pkl->name + ")");

    for (const auto& [name, ref] : refs) {
      const std::string entry_name = prefix + "/data/" + ref.storage_key;
      const ZipEntry* e = zip.find(entry_name);
      if (!e)
        throw Error(path_ + ": tensor " + quoted_name(name) + ": storage " + quoted_name(ref.storage_key) +
                    " (zip entry " + quoted_name(entry_name) + ") is missing");
      uint64_t need = 0;
      if (__builtin_mul_overflow(static_cast<uint64_t>(ref.storage_numel), dtype_size(ref.dtype), &need) ||
          e->size < need)
        throw Error(path_ + ": tensor " + quoted_name(name) + ": storage " + quoted_name(ref.storage_key) +
                    " has " + std::to_string(e->size) + " bytes, too small for the " +
                    std::to_string(ref.storage_numel) + " " + dtype_name(ref.dtype) +
                    " elements the pickle says it holds");
      tensors_.emplace(name, Entry{ref, zip.data(*e)});
    }
  } catch (...) {
    unmap_file(map_);
    throw;
  }
}

TorchCheckpoint::~TorchCheckpoint() { unmap_file(map_); }

std::vector<std::string> TorchCheckpoint::names() const {
  std::vector<std::string> r;
  r.reserve(tensors_.size());
  for (const auto& kv : tensors_) r.push_back(kv.first);
  return r;
}

const TorchCheckpoint::Entry& TorchCheckpoint::entry(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Error(path_ + ": no tensor named " + quoted_name(name));
  return it->second;
}

const TorchTensorRef& TorchCheckpoint::info(const std::string& name) const { return entry(name).ref; }

const uint8_t* TorchCheckpoint::mapped(const std::string& name) const {
  const Entry& e = entry(name);
  if (!is_contiguous(e.ref.shape, e.ref.stride)) return nullptr;
  return e.storage + static_cast<uint64_t>(e.ref.storage_offset) * dtype_size(e.ref.dtype);
}

void TorchCheckpoint::read_f32(const std::string& name, float* out) const {
  const Entry& e = entry(name);
  const TorchTensorRef& r = e.ref;
  if (r.dtype != DType::kF32 && r.dtype != DType::kF16 && r.dtype != DType::kBF16)
    throw Error(path_ + ": tensor " + quoted_name(name) + " has dtype " + dtype_name(r.dtype) +
                "; expected F32, F16 or BF16");
  const size_t numel = Tensor::numel_of(r.shape);  // validated on open: fits and lies inside the storage
  if (numel == 0) return;
  if (is_contiguous(r.shape, r.stride)) {
    gather_f32(r.dtype, e.storage, static_cast<uint64_t>(r.storage_offset), 1, numel, out);
    return;
  }
  // Strided view: walk the outer indices, gather the innermost dimension.
  const size_t nd = r.shape.size();
  const size_t inner = static_cast<size_t>(r.shape[nd - 1]);
  const int64_t inner_stride = r.stride[nd - 1];
  std::vector<int64_t> idx(nd, 0);
  for (size_t done = 0; done < numel; done += inner) {
    uint64_t off = static_cast<uint64_t>(r.storage_offset);
    for (size_t k = 0; k + 1 < nd; ++k) off += static_cast<uint64_t>(idx[k] * r.stride[k]);
    gather_f32(r.dtype, e.storage, off, inner_stride, inner, out + done);
    for (size_t k = nd - 1; k-- > 0;) {
      if (++idx[k] < r.shape[k]) break;
      idx[k] = 0;
    }
  }
}

}  // namespace moepp::io
