#include "tools/cli/commands.h"

namespace reformer::cli {

void RegisterComputeTypeFlag(std::string* compute_type, FlagSet* f) {
  f->Add("compute_type", compute_type,
         "Compute type of the model's matmuls (offline): float32 (exact), bfloat16, int8, or auto (the fastest "
         "this CPU runs); a type the CPU cannot run is an error naming the missing instruction set (docs/isa.md).")
      .OneOf({"float32", "bfloat16", "int8", "auto"});
}

void RegisterClientFlags(ClientOptions* o, FlagSet* f) {
  f->Add("server", &o->server, "A running reformer-server's gRPC address.").Meta("HOST:PORT");
  f->Add("timeout", &o->timeout_s, "Deadline of each request, in seconds.").MinReal(0.001).Meta("SECONDS");
  f->Add("token_file", &o->token_file,
         "A file whose first line is the bearer token sent on every call (servers run with "
         "--auth_tokens_file); default: the environment variable REFORMER_TOKEN, if set.")
      .Meta("FILE");
}

void RegisterForwardFlags(ForwardOptions* o, FlagSet* f) {
  f->Add("model", &o->model, "Model directory (config.json, model.safetensors, ...).").Meta("DIR").Required();
  f->Add("inputs", &o->inputs, "JSON with \"input_ids\": [B][T] and optional \"attention_mask\": [B][T].")
      .Meta("FILE.json")
      .Required();
  f->Add("output", &o->output, "Output file: float32 logits [B,T,V] and hidden_states [B,T,2H].")
      .Meta("OUT.safetensors")
      .Required();
  f->Add("per-document", &o->per_document,
         "Each row's real tokens are one document computed as if alone (what the server answers); default: "
         "Hugging Face padded-batch semantics.");
  f->Add("threads", &o->threads, "OpenMP threads; 0 = every core.").Range(0, 1024);
  RegisterComputeTypeFlag(&o->compute_type, f);
  f->Add("timing", &o->timing,
         "Print where the time went on stderr: each phase's wall seconds, CPU seconds and minor page faults.");
}

void RegisterScoreFlags(ScoreOptions* o, FlagSet* f) {
  f->Add("model", &o->model, "Score offline with this model directory (no server).").Meta("DIR");
  RegisterClientFlags(&o->client, f);
  f->Add("json", &o->json, "One JSON object per file instead of a line of text.");
  f->Add("window", &o->window,
         "Tokens per independent window; 0 = the model's context. Longer texts are scored in windows.")
      .Min(0)
      .Meta("TOKENS");
  f->Add("threads", &o->threads, "OpenMP threads for offline scoring (--model); 0 = every core.").Range(0, 1024);
  RegisterComputeTypeFlag(&o->compute_type, f);
  f->Positional("FILE...", &o->files, "Text files to score.", 1);
}

void RegisterInfoFlags(InfoOptions* o, FlagSet* f) {
  RegisterClientFlags(&o->client, f);
  f->Add("json", &o->json, "One JSON object instead of text.");
}

void RegisterEmbedFlags(EmbedOptions* o, FlagSet* f) {
  RegisterClientFlags(&o->client, f);
  f->Add("normalize", &o->normalize, "Scale each embedding to unit length.");
  f->Add("piece-bytes", &o->piece_bytes,
         "Split files into pieces of at most this many bytes; 0 = from the model's context.")
      .Min(0)
      .Meta("N");
  f->Positional("FILE...", &o->files, "Text files to embed.", 1);
}

}  // namespace reformer::cli
