// TextStream: incremental detokenisation and stop-string matching (see text_stream.h).
#include "infer/text_stream.h"

#include <algorithm>

#include "tokenizer/tokenizer.h"

namespace moepp {

size_t stop_holdback(std::string_view text, const std::vector<std::string>& stops) {
  size_t best = 0;
  for (const std::string& s : stops) {
    if (s.empty()) continue;
    for (size_t L = std::min(s.size() - 1, text.size()); L > best; --L) {
      if (text.substr(text.size() - L) == std::string_view(s).substr(0, L)) {
        best = L;
        break;
      }
    }
  }
  return best;
}

size_t find_stop(std::string_view text, const std::vector<std::string>& stops, size_t from) {
  size_t best = std::string_view::npos;
  for (const std::string& s : stops) {
    if (s.empty()) continue;
    const size_t p = text.find(s, from);
    if (p < best) best = p;
  }
  return best;
}

size_t incomplete_utf8_tail(std::string_view s) {
  for (size_t i = 1; i <= std::min<size_t>(3, s.size()); ++i) {
    const auto c = static_cast<unsigned char>(s[s.size() - i]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead byte
    size_t need = 1;
    if ((c & 0xE0) == 0xC0) need = 2;
    else if ((c & 0xF0) == 0xE0) need = 3;
    else if ((c & 0xF8) == 0xF0) need = 4;
    return i < need ? i : 0;
  }
  return 0;
}

namespace {

// The byte of a <0xNN> byte-fallback piece.
unsigned char piece_byte(const Tokenizer& tok, int32_t id) {
  const std::string p = tok.id_to_piece(id);  // "<0xNN>"
  if (p.size() == 6 && p[0] == '<' && p[1] == '0' && p[2] == 'x' && p[5] == '>')
    return static_cast<unsigned char>(std::stoul(p.substr(3, 2), nullptr, 16));
  return 0;
}

}  // namespace

TextStream::TextStream(const Tokenizer& tok, std::vector<std::string> stops, int32_t anchor)
    : tok_(tok), anchor_(anchor) {
  for (std::string& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
  if (anchor_ >= 0) anchor_text_ = tok_.decode({anchor_});
}

std::string TextStream::decode_upto(size_t n) const {
  std::vector<int32_t> ids(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(n));
  if (anchor_ >= 0) {
    ids.insert(ids.begin(), anchor_);
    std::string full = tok_.decode(ids);
    if (full.compare(0, anchor_text_.size(), anchor_text_) == 0) return full.substr(anchor_text_.size());
    ids.erase(ids.begin());  // the anchor merged with what follows (a split character): decode alone
  }
  return tok_.decode(ids);
}

std::string TextStream::push(int32_t id) {
  if (stopped_ || finished_) return "";
  ids_.push_back(id);
  // Trailing byte-fallback pieces that do not yet form a whole character wait for the rest.
  std::string tail;
  for (size_t i = ids_.size(); i > 0 && tail.size() < 3 && tok_.is_byte(ids_[i - 1]); --i)
    tail.insert(tail.begin(), static_cast<char>(piece_byte(tok_, ids_[i - 1])));
  const size_t hold = incomplete_utf8_tail(tail);
  return advance(decode_upto(ids_.size() - hold), false);
}

std::string TextStream::finish() {
  if (stopped_ || finished_) return "";
  finished_ = true;
  return advance(decode_upto(ids_.size()), true);
}

std::string TextStream::advance(const std::string& text, bool final) {
  const size_t from = emitted_.size();
  // Decoding a longer list extends the text of a shorter one; if it ever did not, emit nothing until
  // the text is longer than what was already emitted.
  if (text.size() <= from) return "";
  const size_t stop = find_stop(text, stops_, from);
  std::string out;
  if (stop != std::string::npos) {
    out = text.substr(from, stop - from);
    stopped_ = true;
  } else {
    std::string_view fresh = std::string_view(text).substr(from);
    const size_t hold = final ? 0 : stop_holdback(fresh, stops_);
    out = std::string(fresh.substr(0, fresh.size() - hold));
  }
  emitted_ += out;
  return out;
}

}  // namespace moepp
