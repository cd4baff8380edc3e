// The chat page of `moepp serve` (docs/serve.md, "Chat page"): the files of src/serve/web/, compiled
// into the binary at build time (cmake/embed_files.cmake writes web_assets() into the build tree), so
// the binary serves them without the source tree.
#pragma once

#include <string_view>
#include <vector>

namespace moepp::serve {

struct WebAsset {
  std::string_view path;          // URL path: "/" for index.html, "/<file name>" for the others
  std::string_view content_type;  // with its charset
  std::string_view body;          // the file's bytes
};

// Every file of the page. Static storage, valid for the whole run; thread-safe.
const std::vector<WebAsset>& web_assets();

}  // namespace moepp::serve
