// Scaffolding shared by the GoogleTest files (header-only): whole-file byte reads and writes
// (read_bytes, write_bytes), ScratchDir (a fresh temporary directory, removed with its contents when it
// goes), the ScratchDirTest fixture (one ScratchDir per test), seeded random inputs (randn,
// random_tokens), and the message of a thrown moepp::Error (error_message). Helpers for some files
// only are beside it: tiny_models.h, tokenizer_fixtures.h, torch_checkpoint_files.h.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "core/error.h"

namespace moepp::test {

// The bytes of the file at `path` ("" when it cannot be opened).
inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Writes `bytes` to the file at `path`, replacing what was there.
inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// An empty directory under GoogleTest's temporary directory, named `prefix`_<pid>_<counter> (unique
// within and across test processes), removed with everything in it on destruction.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix) {
    static std::atomic<int> counter{0};
    dir_ = std::filesystem::path(::testing::TempDir()) /
           (prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::filesystem::path& dir() const { return dir_; }
  // The path of `name` inside the directory.
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

 private:
  std::filesystem::path dir_;
};

// A fixture giving every test its own ScratchDir; `prefix` names the test file's directories.
class ScratchDirTest : public ::testing::Test {
 protected:
  explicit ScratchDirTest(const std::string& prefix) : scratch_(prefix) {}
  const std::filesystem::path& dir() const { return scratch_.dir(); }
  std::string path(const std::string& name) const { return scratch_.path(name); }

 private:
  ScratchDir scratch_;
};

// `n` normally distributed floats times `scale`, drawn from `rng`.
inline std::vector<float> randn(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float& x : v) x = scale * d(rng);
  return v;
}

// `n` token ids uniform in [0, V), from a generator seeded with `seed`.
inline std::vector<int32_t> random_tokens(int64_t n, int64_t V, uint64_t seed) {
  std::mt19937 rng(static_cast<std::mt19937::result_type>(seed));
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = static_cast<int32_t>(rng() % V);
  return t;
}

// The message of the moepp::Error that f() throws, "(no error)" when it throws none.
template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace moepp::test
