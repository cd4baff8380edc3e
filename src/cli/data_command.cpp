// `moepp data tokenize|info`: turn corpus text files (documents separated by blank lines,
// docs/data.md) into a token shard with a tokenizer.model, and describe an existing shard.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "data/token_shards.h"
#include "tokenizer/tokenizer.h"

namespace moepp::cli {
namespace {

struct TokenizeArgs {
  std::string tokenizer, out;
  std::vector<std::string> inputs;
  bool no_bos = false, no_eos = false;
};

struct InfoArgs {
  std::string shard;
  int64_t head = 0;
};

void run_tokenize(const TokenizeArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  const Tokenizer tok(a.tokenizer);
  uint32_t flags = 0;
  if (!a.no_bos) flags |= data::kShardFlagBos;
  if (!a.no_eos) flags |= data::kShardFlagEos;
  data::TokenShardWriter w(a.out, static_cast<uint32_t>(tok.vocab_size()), tok.bos_id(), tok.eos_id(), flags);
  uint64_t text_bytes = 0;
  for (const std::string& in : a.inputs) {
    const std::vector<std::string> docs = data::read_text_documents(in);
    // Encode in chunks of documents in parallel, write in document order.
    const size_t chunk = 256;
    std::vector<std::vector<int32_t>> enc(chunk);
    for (size_t begin = 0; begin < docs.size(); begin += chunk) {
      const size_t n = std::min(chunk, docs.size() - begin);
      std::string first_error;
#pragma omp parallel for schedule(dynamic, 1)
      for (size_t i = 0; i < n; ++i) {
        try {
          enc[i] = tok.encode(docs[begin + i]);
        } catch (const std::exception& e) {
#pragma omp critical
          if (first_error.empty()) first_error = in + ": document " + std::to_string(begin + i) + ": " + e.what();
        }
      }
      if (!first_error.empty()) throw Error(first_error);
      for (size_t i = 0; i < n; ++i) {
        w.add_document(enc[i]);
        text_bytes += docs[begin + i].size();
      }
    }
  }
  w.finish();
  const data::ShardInfo& s = w.info();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("data: wrote %s: %llu documents, %llu tokens (%u-byte ids, vocab %u%s%s), %.2f text bytes/token, %.1f s\n",
              a.out.c_str(), static_cast<unsigned long long>(s.n_docs), static_cast<unsigned long long>(s.n_tokens),
              s.token_bytes, s.vocab_size, (s.flags & data::kShardFlagBos) ? ", bos" : "",
              (s.flags & data::kShardFlagEos) ? ", eos" : "",
              s.n_tokens ? static_cast<double>(text_bytes) / static_cast<double>(s.n_tokens) : 0.0, secs);
}

void run_info(const InfoArgs& a) {
  const data::TokenShard shard(a.shard);
  const data::ShardInfo& s = shard.info();
  std::printf("%s: version %u, vocab %u, %u-byte ids, %llu tokens, %llu documents, flags%s%s, bos %d, eos %d\n",
              a.shard.c_str(), s.version, s.vocab_size, s.token_bytes, static_cast<unsigned long long>(s.n_tokens),
              static_cast<unsigned long long>(s.n_docs), (s.flags & data::kShardFlagBos) ? " bos" : "",
              (s.flags & data::kShardFlagEos) ? " eos" : (s.flags ? "" : " none"), s.bos_id, s.eos_id);
  if (a.head > 0) {
    const uint64_t n = std::min<uint64_t>(static_cast<uint64_t>(a.head), shard.size());
    std::string line;
    for (uint64_t i = 0; i < n; ++i) {
      if (i) line += ' ';
      line += std::to_string(shard[i]);
    }
    std::printf("%s\n", line.c_str());
  }
}

}  // namespace

void register_data_command(CLI::App& app) {
  CLI::App* data = app.add_subcommand("data", "Tokenise corpus text into token shards, inspect shards");
  data->require_subcommand(1);

  auto ta = std::make_shared<TokenizeArgs>();
  CLI::App* tz = data->add_subcommand("tokenize", "Text files (documents separated by blank lines) -> one token shard");
  tz->add_option("--tokenizer", ta->tokenizer, "tokenizer.model")->required();
  tz->add_option("--input", ta->inputs, "text file(s), comma separated or repeated")->required()->delimiter(',');
  tz->add_option("--out", ta->out, "output shard, e.g. train.bin")->required();
  tz->add_flag("--no-bos", ta->no_bos, "do not put bos before each document");
  tz->add_flag("--no-eos", ta->no_eos, "do not put eos after each document");
  tz->callback([ta] { run_tokenize(*ta); });

  auto ia = std::make_shared<InfoArgs>();
  CLI::App* info = data->add_subcommand("info", "Validate a token shard and print its header");
  info->add_option("--shard", ia->shard, "token shard (.bin)")->required();
  info->add_option("--head", ia->head, "also print the first N token ids");
  info->callback([ia] { run_info(*ia); });
}

}  // namespace moepp::cli
