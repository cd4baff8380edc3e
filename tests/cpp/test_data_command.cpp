// Tests of `moepp data` (src/cli/data_command) through the binary: tokenise documents into a token
// shard with a tokenizer trained by the CLI, read the shard back, `data info` on it, and a malformed
// shard is an error naming the file.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "data/token_shards.h"
#include "test_util.h"

using namespace moepp::data;
using namespace moepp::test;

namespace {

#ifdef MOEPP_BINARY  // the path of the moepp binary (tests/CMakeLists.txt)
class DataCommand : public ScratchDirTest {
 protected:
  DataCommand() : ScratchDirTest("moepp_data_command") {}
};

TEST_F(DataCommand, TokenizeAndInfo) {
  // Train a tokenizer through the CLI, tokenise two documents, read the shard back.
  const std::string bin = MOEPP_BINARY;
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the whale and the sea and the ship number " + std::to_string(i % 10) + "\n";
  write_bytes(path("t.txt"), text);
  write_bytes(path("docs.txt"), "the whale\n\nthe sea and the ship\n");
  const std::string m = path("tok.model"), out = path("out.txt"), shard = path("t.bin");
  ASSERT_EQ(std::system((bin + " tokenizer train --input " + path("t.txt") + " --vocab-size 300 --out " + m + " > " +
                         out + " 2>&1")
                            .c_str()),
            0)
      << read_bytes(out);
  ASSERT_EQ(std::system((bin + " data tokenize --tokenizer " + m + " --input " + path("docs.txt") + " --out " + shard +
                         " > " + out + " 2>&1")
                            .c_str()),
            0)
      << read_bytes(out);
  const TokenShard s(shard);
  EXPECT_EQ(s.info().n_docs, 2u);
  EXPECT_EQ(s.info().flags, kShardFlagBos | kShardFlagEos);
  EXPECT_EQ(s.at(0), 1);
  EXPECT_EQ(s.at(s.size() - 1), 2);
  ASSERT_EQ(std::system((bin + " data info --shard " + shard + " > " + out + " 2>&1").c_str()), 0);
  EXPECT_NE(read_bytes(out).find("2 documents"), std::string::npos) << read_bytes(out);
  write_bytes(path("junk.bin"), "junk");
  EXPECT_NE(std::system((bin + " data info --shard " + path("junk.bin") + " > " + out + " 2>&1").c_str()), 0);
  EXPECT_NE(read_bytes(out).find("junk.bin"), std::string::npos) << read_bytes(out);
}
#endif

}  // namespace
