// Unit tests of io/unpickler: pickles that would make the restricted unpickler allocate without bound
// (too many objects, too many memo entries, MARKs nested too deeply, strings longer than the pickle)
// are refused with an error naming the source, before the memory is taken (docs/limits.md).
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "io/unpickler.h"
#include "test_util.h"
#include "torch_checkpoint_files.h"

using namespace moepp::io;
using namespace moepp::test;

namespace {

std::string unpickle_error(const std::string& pickle) {
  return error_message([&] {
    unpickle_state_dict(reinterpret_cast<const uint8_t*>(pickle.data()), pickle.size(), "f.bin (archive/data.pkl)");
  });
}

TEST(UnpicklerLimits, TooManyObjects) {
  // Three million NONEs: each a new object.
  const std::string p = bytes("\x80\x02") + std::string(3'000'000, 'N') + ".";
  const std::string m = unpickle_error(p);
  EXPECT_NE(m.find("f.bin (archive/data.pkl): pickle makes more than 2097152 objects"), std::string::npos) << m;
}

TEST(UnpicklerLimits, TooManyMemoEntries) {
  // One object, memoized under three million keys (LONG_BINPUT k).
  std::string p = bytes("\x80\x02}");
  for (uint32_t k = 0; k < 3'000'000; ++k) {
    p += 'r';
    put32(p, k);
  }
  p += '.';
  const std::string m = unpickle_error(p);
  EXPECT_NE(m.find("f.bin (archive/data.pkl): pickle memoizes more than 2097152 objects"), std::string::npos) << m;
  // A huge memo key costs nothing: the memo is a map, not an array indexed by key.
  const std::string ok = bytes("\x80\x02}r\xff\xff\xff\xff" "h\x00" "0.");
  EXPECT_NE(unpickle_error(ok).find("memo key 0 is not defined"), std::string::npos);
}

TEST(UnpicklerLimits, MarksNestedTooDeeply) {
  const std::string p = bytes("\x80\x02") + std::string(5000, '(') + ".";
  const std::string m = unpickle_error(p);
  EXPECT_NE(m.find("f.bin (archive/data.pkl): MARKs nested deeper than 1024"), std::string::npos) << m;
  // Nesting within the limit is fine (then fails for an unrelated reason: the leftover MARKs).
  const std::string q = bytes("\x80\x02") + std::string(1000, '(') + "}.";
  EXPECT_NE(unpickle_error(q).find("STOP with"), std::string::npos);
}

TEST(UnpicklerLimits, StringLongerThanThePickle) {
  // BINUNICODE8 claiming 2^62 bytes: refused as truncated, nothing allocated.
  std::string p = bytes("\x80\x04\x8d");
  put64(p, uint64_t{1} << 62);
  p += "abc.";
  const std::string m = unpickle_error(p);
  EXPECT_NE(m.find("f.bin (archive/data.pkl): pickle is truncated: need 4611686018427387904 bytes"),
            std::string::npos)
      << m;
}

TEST(UnpicklerLimits, ViewLargerThanItsStorage) {
  // A [2^40] view with stride 0 of a one-element storage: in bounds, but 2^40 elements to read.
  const std::string p = state_dict_pickle({{"w", "FloatStorage", "0", 1, 0, {int64_t{1} << 40}, {0}}});
  const std::string m = unpickle_error(p);
  EXPECT_NE(m.find("tensor 'w': size [1099511627776] has 1099511627776 elements, but storage '0' holds 1"),
            std::string::npos)
      << m;
}

}  // namespace
