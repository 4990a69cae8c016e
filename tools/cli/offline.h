// Offline reformer-cli commands (no server): `forward` and `score`.
#pragma once

namespace reformer::cli {

// reformer-cli forward --model DIR --inputs FILE.json --output OUT.safetensors [--per-document]
int RunForward(int argc, char** argv);
// reformer-cli score --model DIR [--json] [--threads N] FILE...
int RunScore(int argc, char** argv);

}  // namespace reformer::cli
