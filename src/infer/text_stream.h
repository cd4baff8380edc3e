// TextStream: turns generated token ids into text incrementally, for streaming. Two jobs:
//  1. Detokenisation. SentencePiece drops the leading space of the first piece of a decoded list and
//     byte-fallback pieces only form characters together, so piece-by-piece decoding is wrong. The
//     stream decodes [anchor] + all generated ids (anchor: the prompt's last token, whose text is then
//     cut off, so that the first generated piece keeps its leading space) and emits the new suffix.
//     Trailing byte pieces that are an incomplete UTF-8 sequence are held back until the character
//     completes (or generation ends), so every emitted piece of text is complete UTF-8.
//  2. Stop strings. Text that could be the start of a stop string is held back; when a stop string
//     appears, the text before it is emitted and the stream stops (the stop string itself and anything
//     after it are never emitted).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moepp {

class Tokenizer;

// Length of the longest suffix of `text` that is a proper prefix of one of `stops` (the text that must
// be held back because a stop string may be completing). 0 when there is none.
size_t stop_holdback(std::string_view text, const std::vector<std::string>& stops);

// Position of the earliest occurrence in `text` (at or after `from`) of any of `stops`, or npos.
size_t find_stop(std::string_view text, const std::vector<std::string>& stops, size_t from = 0);

// Number of trailing bytes of `s` that form an incomplete (but so far valid) UTF-8 sequence: a lead
// byte followed by fewer continuation bytes than it announces. 0 when s ends on a complete character
// (or on bytes that can never become valid).
size_t incomplete_utf8_tail(std::string_view s);

class TextStream {
 public:
  // tok must outlive the stream. stops: non-empty strings (empty ones are ignored). anchor: the token
  // just before the first generated one (the prompt's last), or -1 for none.
  TextStream(const Tokenizer& tok, std::vector<std::string> stops, int32_t anchor = -1);

  // Adds one generated token; returns the text that became safe to emit (possibly empty). After a
  // stop string was found, further tokens are ignored and return "".
  std::string push(int32_t id);

  // End of generation: returns everything not yet emitted (held-back text; an incomplete UTF-8 tail is
  // decoded as the tokenizer decodes it, i.e. U+FFFD), cut at a stop string if one appears in it.
  // Further calls return "".
  std::string finish();

  bool stopped() const { return stopped_; }
  const std::string& emitted() const { return emitted_; }  // all text returned so far
  const std::vector<int32_t>& ids() const { return ids_; }

 private:
  std::string decode_upto(size_t n) const;  // text of the first n generated ids (anchor cut off)
  std::string advance(const std::string& text, bool final);

  const Tokenizer& tok_;
  std::vector<std::string> stops_;
  int32_t anchor_;
  std::string anchor_text_;
  std::vector<int32_t> ids_;
  std::string emitted_;
  bool stopped_ = false, finished_ = false;
};

}  // namespace moepp
