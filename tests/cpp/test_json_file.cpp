// Tests for io/json_file: read_json_file and parse_json_text turn every nlohmann-json failure into a
// moepp::Error naming the file, including a number too large for a double (1e999: nlohmann's
// out_of_range, not a parse_error; found by fuzz/config_fuzz).
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "io/json_file.h"
#include "test_util.h"

using namespace moepp::io;
using namespace moepp::test;

namespace {

class JsonFileTest : public ScratchDirTest {
 protected:
  JsonFileTest() : ScratchDirTest("moepp_json_file") {}
};

TEST_F(JsonFileTest, ReadsAnObject) {
  const std::string p = path("c.json");
  write_bytes(p, R"({"hidden_size": 16, "rms_norm_eps": 1e-6})");
  const nlohmann::json j = read_json_file(p, "the config");
  EXPECT_EQ(j["hidden_size"], 16);
}

TEST_F(JsonFileTest, EveryFailureNamesTheFile) {
  for (const std::string text : {R"({"hidden_size": 11e308})", R"({"a": -1e999})", R"({"a": 1,)", ""}) {
    SCOPED_TRACE(text);
    const std::string p = path("bad.json");
    write_bytes(p, text);
    const std::string m = error_message([&] { read_json_file(p, "the config"); });
    EXPECT_EQ(m.rfind(p + ": invalid JSON: ", 0), 0u) << m;
    EXPECT_EQ(error_message([&] { parse_json_text(text, "body"); }).rfind("body: invalid JSON: ", 0), 0u);
  }
}

}  // namespace
