// Tests for io/file: read_file, and write_file_atomic (writes, replaces, leaves no temporary file
// behind on success or failure, and fails naming the file and the system's reason on a missing or
// unwritable directory), and AtomicFileWriter (pieces appended, nothing left without commit()).
#include <gtest/gtest.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/file.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace moepp::io;
using namespace moepp::test;

namespace {

class FileTest : public ScratchDirTest {
 protected:
  FileTest() : ScratchDirTest("moepp_file") {}

  // The names in the scratch directory (and in its subdirectory `sub`, prefixed "sub/").
  std::vector<std::string> listing(const std::string& sub = "") const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(sub.empty() ? dir() : dir() / sub))
      names.push_back((sub.empty() ? "" : sub + "/") + e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

// While it lives, the calling thread's file accesses are checked as an unprivileged user's, so that
// permission bits hold in a test run as root too (Linux's setfsuid is per thread; for a non-root
// process it changes nothing, and the permission bits hold anyway).
class UnprivilegedFileAccess {
 public:
  UnprivilegedFileAccess() : previous_(::setfsuid(65534)) {}
  ~UnprivilegedFileAccess() { ::setfsuid(previous_); }
  // False when the process is root and could not give up its file-system privileges (a user
  // namespace without uid 65534, say): the permission bits are then not checked.
  bool effective() const { return ::geteuid() != 0 || ::setfsuid(static_cast<uid_t>(-1)) == 65534; }
  UnprivilegedFileAccess(const UnprivilegedFileAccess&) = delete;
  UnprivilegedFileAccess& operator=(const UnprivilegedFileAccess&) = delete;

 private:
  int previous_;
};

TEST_F(FileTest, WritesTheBytes) {
  write_file_atomic(path("a.txt"), std::string("hello\n"));
  EXPECT_EQ(read_bytes(path("a.txt")), "hello\n");
  const std::string binary("x\0y\xff", 4);
  write_file_atomic(path("b.bin"), binary.data(), binary.size());
  EXPECT_EQ(read_bytes(path("b.bin")), binary);
  write_file_atomic(path("parts.bin"), std::vector<ByteRange>{{"ab", 2}, {nullptr, 0}, {"cde", 3}});
  EXPECT_EQ(read_bytes(path("parts.bin")), "abcde");
  write_file_atomic(path("empty"), "");
  EXPECT_TRUE(fs::exists(path("empty")));
  EXPECT_EQ(fs::file_size(path("empty")), 0u);
  EXPECT_EQ(read_file(path("b.bin")), binary);
}

TEST_F(FileTest, ReplacesAnExistingFile) {
  write_bytes(path("f"), "a much longer old content");
  write_file_atomic(path("f"), "new");
  EXPECT_EQ(read_bytes(path("f")), "new");
  write_file_atomic(path("f"), "newer");
  EXPECT_EQ(read_file(path("f")), "newer");
}

TEST_F(FileTest, LeavesNoTemporaryFileBehind) {
  fs::create_directories(dir() / "sub");
  write_file_atomic(path("one"), "1");
  write_file_atomic(path("sub/two"), "2");
  write_file_atomic(path("one"), "3");
  EXPECT_EQ(listing(), (std::vector<std::string>{"one", "sub"}));
  EXPECT_EQ(listing("sub"), (std::vector<std::string>{"sub/two"}));
  // A rename onto a non-empty directory fails after the bytes were written: the temporary goes too.
  fs::create_directories(dir() / "target" / "inner");
  const std::string m = error_message([&] { write_file_atomic(path("target"), "x"); });
  EXPECT_NE(m.find("cannot write " + path("target") + ": rename failed: "), std::string::npos) << m;
  EXPECT_EQ(listing(), (std::vector<std::string>{"one", "sub", "target"}));
}

TEST_F(FileTest, AtomicFileWriterAppendsAndCommits) {
  write_bytes(path("f"), "old");
  {
    AtomicFileWriter w(path("f"));
    w.write("ab", 2);
    w.write(nullptr, 0);
    w.write("cde", 3);
    EXPECT_EQ(read_bytes(path("f")), "old") << "visible before commit()";
    w.commit();
    const std::string m = error_message([&] { w.write("x", 1); });
    EXPECT_NE(m.find("already committed"), std::string::npos) << m;
    EXPECT_THROW(w.commit(), moepp::Error);
  }
  EXPECT_EQ(read_bytes(path("f")), "abcde");
  EXPECT_EQ(listing(), (std::vector<std::string>{"f"}));
}

TEST_F(FileTest, AtomicFileWriterWithoutCommitLeavesTheOldFile) {
  write_bytes(path("f"), "old");
  try {
    AtomicFileWriter w(path("f"));
    w.write("partial", 7);
    throw std::runtime_error("the producer failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(read_bytes(path("f")), "old");
  EXPECT_EQ(listing(), (std::vector<std::string>{"f"})) << "the temporary file stayed";
  {
    AtomicFileWriter w(path("new"));  // never committed: no file at all
  }
  EXPECT_EQ(listing(), (std::vector<std::string>{"f"}));
}

TEST_F(FileTest, MissingDirectoryIsAnError) {
  const std::string target = path("no/such/dir/out.json");
  const std::string m = error_message([&] { write_file_atomic(target, "{}"); });
  EXPECT_EQ(m.rfind("cannot write " + target + ": cannot create " + target + ".tmp.", 0), 0u) << m;
  EXPECT_NE(m.find("No such file or directory"), std::string::npos) << m;
}

TEST_F(FileTest, UnwritableDirectoryIsAnError) {
  fs::create_directories(dir() / "ro");
  write_bytes(path("ro/kept"), "old");
  if (!UnprivilegedFileAccess().effective()) GTEST_SKIP() << "the permission bits are not checked for this root";
  ASSERT_EQ(::chmod(path("ro").c_str(), 0555), 0);
  std::string new_file, replaced;
  {
    const UnprivilegedFileAccess unprivileged;
    new_file = error_message([&] { write_file_atomic(path("ro/new"), "x"); });
    replaced = error_message([&] { write_file_atomic(path("ro/kept"), "x"); });
  }
  ::chmod(path("ro").c_str(), 0755);
  for (const std::string& m : {new_file, replaced}) {
    EXPECT_NE(m.find("cannot write " + path("ro/")), std::string::npos) << m;
    EXPECT_NE(m.find("Permission denied"), std::string::npos) << m;
  }
  EXPECT_NE(new_file.find(path("ro/new")), std::string::npos) << new_file;
  EXPECT_EQ(listing("ro"), (std::vector<std::string>{"ro/kept"}));
  EXPECT_EQ(read_bytes(path("ro/kept")), "old");
}

TEST_F(FileTest, ReadFileErrorsNameTheFile) {
  const std::string missing = path("missing.txt");
  const std::string m = error_message([&] { read_file(missing, "the test input"); });
  EXPECT_EQ(m, missing + ": cannot open the test input: No such file or directory");
}

TEST(AtomicWriteTemporary, RecognisesExactlyTheWritersTemporaryNames) {
  EXPECT_TRUE(is_atomic_write_temporary("latest.tmp.12345"));
  EXPECT_TRUE(is_atomic_write_temporary("model.safetensors.tmp.7"));
  EXPECT_FALSE(is_atomic_write_temporary("latest"));
  EXPECT_FALSE(is_atomic_write_temporary("latest.tmp."));
  EXPECT_FALSE(is_atomic_write_temporary("latest.tmp.12a"));
  EXPECT_FALSE(is_atomic_write_temporary(".tmp.12"));
  EXPECT_FALSE(is_atomic_write_temporary("notes.tmp.txt"));
}

}  // namespace
