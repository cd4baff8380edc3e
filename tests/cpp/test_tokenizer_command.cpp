// Tests of `moepp tokenizer` (src/cli/tokenizer_command) through the binary: train a tokenizer from a
// text file, encode with a BOS, decode the ids back, and a missing model is an error naming the file.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "test_util.h"
#include "tokenizer_fixtures.h"

using namespace moepp::test;

namespace {

#ifdef MOEPP_BINARY  // the path of the moepp binary (tests/CMakeLists.txt)
class TokenizerCommand : public ScratchDirTest {
 protected:
  TokenizerCommand() : ScratchDirTest("moepp_tokenizer_command") {}
  void SetUp() override { write_bytes(path("train.txt"), captains_log_text()); }
};

TEST_F(TokenizerCommand, TrainEncodeDecode) {
  const std::string bin = MOEPP_BINARY;
  const std::string m = path("cli/tokenizer.model");
  const std::string out = path("cli_out.txt");
  ASSERT_EQ(std::system((bin + " tokenizer train --input " + path("train.txt") + " --vocab-size 330 --out " + m +
                         " > " + out + " 2>&1")
                            .c_str()),
            0)
      << read_bytes(out);
  ASSERT_EQ(std::system((bin + " tokenizer encode --model " + m + " --text 'the sea' --bos > " + out).c_str()), 0);
  std::string ids = read_bytes(out);
  ASSERT_EQ(ids.rfind("1 ", 0), 0u) << ids;
  while (!ids.empty() && ids.back() == '\n') ids.pop_back();
  ASSERT_EQ(std::system((bin + " tokenizer decode --model " + m + " --ids '" + ids + "' > " + out).c_str()), 0);
  EXPECT_EQ(read_bytes(out), "the sea\n");
  EXPECT_NE(std::system((bin + " tokenizer encode --model " + path("missing.model") + " --text x > " + out +
                         " 2>&1")
                            .c_str()),
            0);
  EXPECT_NE(read_bytes(out).find("missing.model"), std::string::npos);
}
#endif

}  // namespace
