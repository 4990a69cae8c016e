// reformer-cli client commands: talk to a running reformer-server over gRPC (reformer.v1 and
// KServe v2). Long files are split into pieces that fit the model's context, sent a few at a
// time, with a progress bar on stderr.
#include "tools/cli/commands.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "grpcpp/support/client_interceptor.h"
#include "proto/grpc_service.grpc.pb.h"
#include "proto/reformer.grpc.pb.h"
#include "engine/model/scoring.h"
#include "nlohmann/json.hpp"
#include "tools/cli/generate.h"
#include "tools/cli/progress.h"
#include "tools/cli/text_files.h"

namespace reformer::cli {
namespace {

namespace v1 = ::reformer::v1;

// Adds `authorization: Bearer <token>` to every call of the channel (gRPC's client interceptors,
// grpcpp/support/client_interceptor.h): per-call credentials would need a TLS channel.
class BearerInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerInterceptor(const std::string* value) : value_(value) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *value_});
    }
    methods->Proceed();
  }

 private:
  const std::string* const value_;  // owned by the factory, which the channel owns
};

class BearerInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerInterceptorFactory(const std::string& token) : value_("Bearer " + token) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo*) override {
    return new BearerInterceptor(&value_);
  }

 private:
  const std::string value_;
};

// The token of ClientOptions (commands.h): --token_file's first line, else $REFORMER_TOKEN, else "".
// False (with a message that never shows the token) when the file is unreadable or the token is
// not 1 to 4096 visible ASCII characters.
bool ResolveToken(const ClientOptions& c, std::string* token) {
  std::string source;
  if (!c.token_file.empty()) {
    std::ifstream in(c.token_file, std::ios::binary);
    if (!in || !std::getline(in, *token)) {
      std::fprintf(stderr, "reformer-cli: cannot read a token from --token_file %s\n", c.token_file.c_str());
      return false;
    }
    source = "--token_file " + c.token_file;
  } else if (const char* env = std::getenv(kTokenEnv); env != nullptr && *env != '\0') {
    *token = env;
    source = kTokenEnv;
  } else {
    token->clear();
    return true;
  }
  const size_t begin = token->find_first_not_of(" \t\r");
  const size_t end = token->find_last_not_of(" \t\r");
  *token = begin == std::string::npos ? "" : token->substr(begin, end - begin + 1);
  const bool visible = std::all_of(token->begin(), token->end(), [](char ch) { return ch > 0x20 && ch < 0x7f; });
  if (token->empty() || token->size() > 4096 || !visible) {
    std::fprintf(stderr, "reformer-cli: the token in %s is not 1 to 4096 visible ASCII characters\n",
                 source.c_str());
    return false;
  }
  return true;
}

// The channel to --server, sending the bearer token on every call when there is one; nullptr (after
// saying why on stderr) when the token cannot be read.
std::shared_ptr<grpc::Channel> Connect(const ClientOptions& c) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(512 << 20);
  args.SetMaxSendMessageSize(512 << 20);
  std::string token;
  if (!ResolveToken(c, &token)) return nullptr;
  if (token.empty()) return grpc::CreateCustomChannel(c.server, grpc::InsecureChannelCredentials(), args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<BearerInterceptorFactory>(token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      c.server, grpc::InsecureChannelCredentials(), args, std::move(interceptors));
}

// --timeout is any finite number >= 0.001; beyond ~3 years it means "no deadline" (converting 1e300
// seconds to milliseconds overflowed int64 into a deadline in the past: DEADLINE_EXCEEDED at once).
void SetDeadline(grpc::ClientContext* ctx, double seconds) {
  constexpr double kLongestSeconds = 1e8;
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(std::min(seconds, kLongestSeconds) * 1000)));
}

int Fail(const std::string& what, const grpc::Status& st) {
  std::fprintf(stderr, "reformer-cli: %s: %s (%d)\n", what.c_str(), st.error_message().c_str(),
               static_cast<int>(st.error_code()));
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE) {
    std::fprintf(stderr, "reformer-cli: is a reformer-server running there? (--server HOST:PORT; commands that "
                         "can run offline take --model DIR)\n");
  }
  return 1;
}

std::string JsonEscape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o.push_back('\\');
      o.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      o += buf;
    } else {
      o.push_back(c);
    }
  }
  return o;
}

bool GetInfo(v1::ReformerService::Stub* stub, const ClientOptions& c, v1::GetModelInfoResponse* info) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, std::min(c.timeout_s, 30.0));
  grpc::Status st = stub->GetModelInfo(&ctx, {}, info);
  if (!st.ok()) {
    Fail("GetModelInfo on " + c.server, st);
    return false;
  }
  return true;
}

}  // namespace

int RunHealth(const ClientOptions& f) {
  std::shared_ptr<grpc::Channel> channel = Connect(f);
  if (channel == nullptr) return 2;
  auto stub = inference::GRPCInferenceService::NewStub(channel);
  inference::ServerLiveResponse live;
  inference::ServerReadyResponse ready;
  grpc::ClientContext c1;
  SetDeadline(&c1, 10);
  grpc::Status st = stub->ServerLive(&c1, {}, &live);
  if (!st.ok()) return Fail("ServerLive on " + f.server, st);
  grpc::ClientContext c2;
  SetDeadline(&c2, 10);
  st = stub->ServerReady(&c2, {}, &ready);
  if (!st.ok()) return Fail("ServerReady on " + f.server, st);
  std::printf("%s: live=%s ready=%s\n", f.server.c_str(), live.live() ? "yes" : "no",
              ready.ready() ? "yes" : "no");
  return ready.ready() ? 0 : 1;
}

int RunInfo(const InfoOptions& f) {
  std::shared_ptr<grpc::Channel> channel = Connect(f.client);
  if (channel == nullptr) return 2;
  auto stub = v1::ReformerService::NewStub(channel);
  v1::GetModelInfoResponse info;
  if (!GetInfo(stub.get(), f.client, &info)) return 1;
  std::string layers;
  for (const auto& l : info.attn_layers()) layers += (layers.empty() ? "" : ",") + l;
  if (f.json) {
    std::printf(
        "{\"name\":\"%s\",\"version\":\"%s\",\"vocab_size\":%lld,\"max_tokens_per_document\":%lld,"
        "\"max_tokens_per_request\":%lld,\"hidden_size\":%lld,\"embedding_size\":%lld,"
        "\"attn_layers\":\"%s\",\"causal\":%s,\"tokenizer\":\"%s\",\"rotations_source\":\"%s\"}\n",
        JsonEscape(info.name()).c_str(), JsonEscape(info.version()).c_str(),
        static_cast<long long>(info.vocab_size()), static_cast<long long>(info.max_tokens_per_document()),
        static_cast<long long>(info.max_tokens_per_request()), static_cast<long long>(info.hidden_size()),
        static_cast<long long>(info.embedding_size()), layers.c_str(), info.causal() ? "true" : "false",
        JsonEscape(info.tokenizer()).c_str(), JsonEscape(info.rotations_source()).c_str());
  } else {
    std::printf("model %s (version %s)\n  layers %lld [%s], hidden %lld, embedding %lld, vocab %lld\n"
                "  context %lld tokens/document, %lld tokens/request\n  causal %s, tokenizer %s, "
                "rotations %s\n",
                info.name().c_str(), info.version().c_str(), static_cast<long long>(info.num_layers()),
                layers.c_str(), static_cast<long long>(info.hidden_size()),
                static_cast<long long>(info.embedding_size()), static_cast<long long>(info.vocab_size()),
                static_cast<long long>(info.max_tokens_per_document()),
                static_cast<long long>(info.max_tokens_per_request()), info.causal() ? "yes" : "no",
                info.tokenizer().empty() ? "none (ids only)" : info.tokenizer().c_str(),
                info.rotations_source().c_str());
  }
  return 0;
}

namespace {

// Pieces of every file, and the requests (groups of pieces) that fit the request limit.
struct Work {
  std::vector<std::vector<std::string>> pieces;  // per file
  int64_t total_bytes = 0;
};

bool Prepare(const EmbedOptions& f, const v1::GetModelInfoResponse& info, Work* w) {
  if (f.files.empty()) {
    std::fprintf(stderr, "reformer-cli: no input files\n");
    return false;
  }
  if (info.tokenizer().empty()) {
    std::fprintf(stderr, "reformer-cli: model '%s' has no tokenizer (token ids only)\n",
                 info.name().c_str());
    return false;
  }
  // A token stands for at least one byte, so a piece of context - margin bytes fits.
  const int64_t piece = f.piece_bytes > 0 ? f.piece_bytes
                                          : std::max<int64_t>(1, info.max_tokens_per_document() - 8);
  for (const std::string& path : f.files) {
    std::string text;
    if (absl::Status st = ReadTextFile(path, &text); !st.ok()) {
      std::fprintf(stderr, "reformer-cli: %s\n", std::string(st.message()).c_str());
      return false;
    }
    if (text.empty()) {
      std::fprintf(stderr, "reformer-cli: %s is empty; there is nothing to embed\n", path.c_str());
      return false;
    }
    if (absl::Status st = CheckUtf8(path, text); !st.ok()) {
      std::fprintf(stderr, "reformer-cli: %s\n", std::string(st.message()).c_str());
      return false;
    }
    w->total_bytes += static_cast<int64_t>(text.size());
    w->pieces.push_back(SplitText(text, piece));
  }
  return true;
}

// The token ids of `text` under the served model's tokenizer, in the slices offline `score` uses
// (tools/cli/text_files.h), so both see the same ids; smaller slices only when the server's
// --max_tokens_per_request is below a slice.
bool TokenizeText(v1::ReformerService::Stub* stub, const ClientOptions& f, const v1::GetModelInfoResponse& info,
                  const std::string& path, const std::string& text, std::vector<int32_t>* ids) {
  int64_t slice = kTokenizeSliceBytes;
  if (info.max_tokens_per_request() <= slice) {
    slice = std::max<int64_t>(1, info.max_tokens_per_request() - 1);
    if (info.tokenizer() != "bytes")
      std::fprintf(stderr, "reformer-cli: tokenizing %s in %lld-byte slices (the server's limit); its figures may "
                   "differ from offline `score`\n", path.c_str(), static_cast<long long>(slice));
  }
  grpc::Status st;
  absl::StatusOr<std::vector<int32_t>> all =
      EncodeInSlices(text, slice, [&](const std::string& piece) -> absl::StatusOr<std::vector<int32_t>> {
        v1::TokenizeRequest req;
        req.add_texts(piece);
        v1::TokenizeResponse resp;
        grpc::ClientContext ctx;
        SetDeadline(&ctx, f.timeout_s);
        st = stub->Tokenize(&ctx, req, &resp);
        if (!st.ok()) return absl::UnknownError(st.error_message());
        return std::vector<int32_t>(resp.tokens(0).ids().begin(), resp.tokens(0).ids().end());
      });
  if (!all.ok()) {
    Fail("Tokenize " + path, st);
    return false;
  }
  *ids = *std::move(all);
  return true;
}

}  // namespace

int RunScoreOnServer(const ScoreOptions& f) {
  std::shared_ptr<grpc::Channel> channel = Connect(f.client);
  if (channel == nullptr) return 2;
  auto stub = v1::ReformerService::NewStub(channel);
  v1::GetModelInfoResponse info;
  if (!GetInfo(stub.get(), f.client, &info)) return 1;
  if (!info.causal()) {
    std::fprintf(stderr, "reformer-cli: model '%s' is not causal; score needs a causal LM\n",
                 info.name().c_str());
    return 1;
  }
  if (info.tokenizer().empty()) {
    std::fprintf(stderr, "reformer-cli: model '%s' has no tokenizer (token ids only)\n", info.name().c_str());
    return 1;
  }
  if (f.files.empty()) {
    std::fprintf(stderr, "reformer-cli: no input files\n");
    return 1;
  }
  const int64_t context = info.max_tokens_per_document();
  const int64_t window = f.window > 0 ? std::min(f.window, context) : context;
  const int64_t per_request = std::max<int64_t>(window, info.max_tokens_per_request());
  int rc = 0;
  for (const std::string& path : f.files) {
    std::string text;
    absl::Status read = ReadTextFile(path, &text);
    if (read.ok()) read = CheckUtf8(path, text);
    if (!read.ok()) {
      std::fprintf(stderr, "reformer-cli: %s\n", std::string(read.message()).c_str());
      rc = 1;
      continue;
    }
    std::vector<int32_t> ids;
    if (!TokenizeText(stub.get(), f.client, info, path, text, &ids)) {
      rc = 1;
      continue;
    }
    if (ids.size() < 2) {
      std::fprintf(stderr, "reformer-cli: %s: needs at least 2 tokens to score, has %zu\n", path.c_str(),
                   ids.size());
      rc = 1;
      continue;
    }
    const std::vector<absl::Span<const int32_t>> windows = SplitWindows(ids, window);
    ProgressBar bar(path, static_cast<double>(ids.size()));
    ScoreTotals totals;
    double done = 0;
    bool failed = false;
    // Requests of consecutive windows up to the server's per-request token limit.
    for (size_t start = 0; start < windows.size() && !failed;) {
      v1::ScoreRequest req;
      int64_t tokens = 0;
      size_t end = start;
      while (end < windows.size() &&
             (end == start || tokens + static_cast<int64_t>(windows[end].size()) <= per_request)) {
        req.add_documents()->mutable_ids()->mutable_ids()->Add(windows[end].begin(), windows[end].end());
        tokens += static_cast<int64_t>(windows[end].size());
        ++end;
      }
      grpc::ClientContext ctx;
      SetDeadline(&ctx, f.client.timeout_s);
      v1::ScoreResponse resp;
      grpc::Status st = stub->Score(&ctx, req, &resp);
      if (!st.ok()) {
        bar.Finish();
        rc = Fail("Score " + path, st);
        failed = true;
        break;
      }
      for (const auto& s : resp.scores()) {
        ScoreTotals w;
        w.nll_nats = -s.total_logprob();
        w.tokens = std::max<int64_t>(0, s.num_tokens() - 1);
        w.bytes = s.num_bytes();
        totals.Add(w);
      }
      done += static_cast<double>(tokens);
      bar.Update(done);
      start = end;
    }
    bar.Finish();
    if (failed) continue;
    // The offline `score` format (tools/cli/offline.cc), plus the window count.
    if (f.json) {
      std::printf("{\"file\":\"%s\",\"bits_per_byte\":%.17g,\"perplexity\":%.17g,\"bytes\":%lld,"
                  "\"tokens\":%zu,\"windows\":%zu,\"total_logprob\":%.17g}\n",
                  JsonEscape(path).c_str(), totals.bits_per_byte(), totals.perplexity(),
                  static_cast<long long>(totals.bytes), ids.size(), windows.size(), -totals.nll_nats);
    } else {
      std::printf("%s: %.4f bits/byte, perplexity %.4f, %lld bytes, %zu tokens\n", path.c_str(),
                  totals.bits_per_byte(), totals.perplexity(), static_cast<long long>(totals.bytes),
                  ids.size());
    }
    std::fflush(stdout);
  }
  return rc;
}

int RunEmbed(const EmbedOptions& f) {
  std::shared_ptr<grpc::Channel> channel = Connect(f.client);
  if (channel == nullptr) return 2;
  auto stub = v1::ReformerService::NewStub(channel);
  v1::GetModelInfoResponse info;
  if (!GetInfo(stub.get(), f.client, &info)) return 1;
  Work w;
  if (!Prepare(f, info, &w)) return 1;
  const int64_t per_request =
      std::max<int64_t>(1, info.max_tokens_per_request() / std::max<int64_t>(1, info.max_tokens_per_document()));
  ProgressBar bar("embed", static_cast<double>(w.total_bytes));
  double done_bytes = 0;
  for (size_t i = 0; i < f.files.size(); ++i) {
    // The file's embedding is the mean over all its tokens = token-weighted mean of the pieces'.
    std::vector<double> sum(static_cast<size_t>(info.embedding_size()), 0.0);
    int64_t tokens = 0;
    const auto& pieces = w.pieces[i];
    for (size_t start = 0; start < pieces.size(); start += static_cast<size_t>(per_request)) {
      v1::EmbedRequest req;
      const size_t end = std::min(pieces.size(), start + static_cast<size_t>(per_request));
      for (size_t k = start; k < end; ++k) req.add_documents()->set_text(pieces[k]);
      grpc::ClientContext ctx;
      SetDeadline(&ctx, f.client.timeout_s);
      v1::EmbedResponse resp;
      grpc::Status st = stub->Embed(&ctx, req, &resp);
      if (!st.ok()) {
        bar.Finish();
        return Fail("Embed " + f.files[i], st);
      }
      for (const auto& e : resp.embeddings()) {
        for (int k = 0; k < e.values_size() && k < static_cast<int>(sum.size()); ++k) {
          sum[k] += static_cast<double>(e.values(k)) * static_cast<double>(e.num_tokens());
        }
        tokens += e.num_tokens();
      }
      for (size_t k = start; k < end; ++k) done_bytes += static_cast<double>(pieces[k].size());
      bar.Update(done_bytes);
    }
    bar.Finish();
    if (tokens == 0) {  // e.g. whitespace that a SentencePiece model drops: no mean to print
      std::fprintf(stderr, "reformer-cli: %s has no tokens; there is nothing to embed\n", f.files[i].c_str());
      return 1;
    }
    double norm = 0;
    for (double& x : sum) {
      x /= std::max<int64_t>(tokens, 1);
      norm += x * x;
    }
    norm = std::sqrt(norm);
    std::printf("{\"file\":\"%s\",\"tokens\":%lld,\"embedding\":[", JsonEscape(f.files[i]).c_str(),
                static_cast<long long>(tokens));
    for (size_t k = 0; k < sum.size(); ++k) {
      const double x = f.normalize && norm > 0 ? sum[k] / norm : sum[k];
      std::printf("%s%.7g", k ? "," : "", x);
    }
    std::printf("]}\n");
  }
  return 0;
}

// ---- generate --server ---------------------------------------------------------------------------

namespace {

v1::GenerateRequest ToGenerateRequest(const ServerGenerate& g, size_t index) {
  v1::GenerateRequest r;
  if (g.has_text) {
    r.mutable_prompt()->set_text(g.text);
  } else {
    r.mutable_prompt()->mutable_ids()->mutable_ids()->Add(g.prompts[index].begin(), g.prompts[index].end());
  }
  const GenerationParams& p = g.params;
  r.set_max_new_tokens(static_cast<int32_t>(std::min<int64_t>(p.max_new_tokens, INT32_MAX)));
  r.set_temperature(p.sampling.temperature);
  r.set_top_k(p.sampling.top_k);
  r.set_top_p(p.sampling.top_p);
  r.set_seed(p.sampling.seed);
  for (const std::string& s : p.stop) r.add_stop(s);
  r.set_mode(p.mode == DecodeMode::kRecompute ? v1::DECODE_MODE_RECOMPUTE : v1::DECODE_MODE_CACHED);
  r.set_return_logprobs(g.logprobs);
  r.set_ignore_eos(p.ignore_eos);
  return r;
}

const char* FinishName(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_EOS: return "eos";
    case v1::FINISH_REASON_STOP: return "stop";
    default: return "";
  }
}

// One prompt's stream: printed as it comes (text, or ids without a tokenizer), or as one JSON line.
int StreamOne(v1::ReformerService::Stub* stub, const ServerGenerate& g, size_t index, bool text) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, g.client.timeout_s);
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub->Generate(&ctx, ToGenerateRequest(g, index));
  v1::GenerateResponse m, last;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::string all;
  while (reader->Read(&m)) {
    tokens.insert(tokens.end(), m.token_ids().begin(), m.token_ids().end());
    logprobs.insert(logprobs.end(), m.logprobs().begin(), m.logprobs().end());
    all += m.text();
    if (!g.json) {
      if (text) {
        std::fwrite(m.text().data(), 1, m.text().size(), stdout);
      } else {
        for (int32_t t : m.token_ids()) std::printf("%d ", t);
      }
      std::fflush(stdout);
    }
    if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) last = m;
  }
  grpc::Status st = reader->Finish();
  if (!g.json) std::printf("\n");
  if (!st.ok()) {
    Fail("Generate on " + g.client.server, st);
    // A request the model refuses exits 2 as offline generation's does (tools/cli/generate.cc Fail).
    return st.error_code() == grpc::StatusCode::INVALID_ARGUMENT ? 2 : 1;
  }
  if (g.json) {
    nlohmann::json o = {{"index", index}, {"new_tokens", tokens}, {"finish_reason", FinishName(last.finish_reason())},
                        {"seed", last.seed()}};
    if (text) o["text"] = all;
    if (g.logprobs) o["logprobs"] = logprobs;
    std::printf("%s\n", o.dump().c_str());
  } else {
    std::fprintf(stderr, "[%zu: %zu tokens, finish_reason %s, seed %llu, time to first token %.1f ms]\n", index,
                 tokens.size(), FinishName(last.finish_reason()), static_cast<unsigned long long>(last.seed()),
                 last.usage().time_to_first_token_ms());
  }
  return 0;
}

}  // namespace

int RunGenerateOnServer(const ServerGenerate& g) {
  const ClientOptions& c = g.client;
  std::shared_ptr<grpc::Channel> channel = Connect(c);
  if (channel == nullptr) return 2;
  auto stub = v1::ReformerService::NewStub(channel);
  v1::GetModelInfoResponse info;
  if (!GetInfo(stub.get(), c, &info)) return 1;
  const bool text = !info.tokenizer().empty();
  if (g.has_text) {
    if (absl::Status st = CheckUtf8("--prompt", g.text); !st.ok()) {
      std::fprintf(stderr, "reformer-cli: %s\n", std::string(st.message()).c_str());
      return 2;
    }
  }
  const size_t n = g.has_text ? 1 : g.prompts.size();
  for (size_t i = 0; i < n; ++i) {
    if (int rc = StreamOne(stub.get(), g, i, text); rc != 0) return rc;
  }
  return 0;
}

}  // namespace reformer::cli
