// Offline reformer-cli command `generate` (no server): docs/generation.md.
#pragma once

namespace reformer::cli {

// reformer-cli generate --model DIR (--inputs FILE.json | --prompt TEXT) --max_new_tokens N [...]
int RunGenerate(int argc, char** argv);

}  // namespace reformer::cli
