#include "engine/base/flags.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace reformer {
namespace {

constexpr size_t kHelpColumn = 34;
constexpr size_t kWidth = 100;

std::string Normalize(const std::string& name) { return absl::StrReplaceAll(name, {{"-", "_"}}); }

bool IsInteger(const std::string& s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  if (i == s.size()) return false;
  for (; i < s.size(); ++i) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

std::optional<bool> ParseBool(const std::string& s) {
  const std::string v = absl::AsciiStrToLower(s);
  if (v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no") return false;
  return std::nullopt;
}

// 4294967296 -> "4 GiB" (exact multiples of KiB only), else "".
std::string HumanBytes(int64_t v) {
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  if (v < 1024 || v % 1024 != 0) return "";
  int unit = 0;
  v /= 1024;
  while (unit < 3 && v % 1024 == 0 && v >= 1024) {
    v /= 1024;
    ++unit;
  }
  return absl::StrCat(v, " ", kUnits[unit]);
}

// A space that AppendWrapped does not break at (kept inside "[default: X]").
constexpr char kNoBreakSpace = '\x01';

// Appends `text` word-wrapped to `width`, continuation lines indented by `indent` columns.
void AppendWrapped(const std::string& text, size_t column, size_t indent, std::string* out) {
  for (absl::string_view piece : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    std::string word(piece);
    std::replace(word.begin(), word.end(), kNoBreakSpace, ' ');
    if (column > indent && column + 1 + word.size() > kWidth) {
      absl::StrAppend(out, "\n", std::string(indent, ' '));
      column = indent;
    } else if (column > indent) {
      out->push_back(' ');
      ++column;
    }
    absl::StrAppend(out, word);
    column += word.size();
  }
}

std::string MarkdownCell(const std::string& s) { return absl::StrReplaceAll(s, {{"|", "\\|"}}); }

}  // namespace

// --- Flag ---------------------------------------------------------------------------------------

Flag::Flag(std::string name, Destination dst, std::string help)
    : name_(std::move(name)), dst_(dst), help_(std::move(help)) {
  default_text_ = Current();
}

Flag& Flag::Min(int64_t v) {
  min_ = v;
  real_min_ = static_cast<double>(v);
  return *this;
}
Flag& Flag::Max(int64_t v) {
  max_ = v;
  return *this;
}
Flag& Flag::MinReal(double v) {
  real_min_ = v;
  return *this;
}
Flag& Flag::MaxReal(double v) {
  real_max_ = v;
  return *this;
}
Flag& Flag::OneOf(std::vector<std::string> values) {
  one_of_ = std::move(values);
  return *this;
}
Flag& Flag::Meta(std::string meta) {
  meta_ = std::move(meta);
  return *this;
}
Flag& Flag::Required() {
  required_ = true;
  return *this;
}

std::string Flag::Current() const {
  struct Visitor {
    std::string operator()(int* p) const { return absl::StrCat(*p); }
    std::string operator()(int64_t* p) const { return absl::StrCat(*p); }
    std::string operator()(double* p) const { return absl::StrCat(*p); }
    std::string operator()(bool* p) const { return *p ? "true" : "false"; }
    std::string operator()(std::string* p) const { return *p; }
    std::string operator()(std::vector<std::string>* p) const { return absl::StrJoin(*p, ","); }
  };
  return std::visit(Visitor{}, dst_);
}

std::string Flag::Synopsis() const {
  if (is_bool()) return absl::StrCat("--", name_);
  std::string meta = meta_;
  if (meta.empty()) {
    if (!one_of_.empty()) meta = absl::StrJoin(one_of_, "|");
    else if (std::holds_alternative<std::string*>(dst_) ||
             std::holds_alternative<std::vector<std::string>*>(dst_)) meta = "STRING";
    else if (std::holds_alternative<double*>(dst_)) meta = "X";
    else meta = "N";
  }
  return absl::StrCat("--", name_, "=", meta);
}

std::string Flag::Constraint() const {
  if (!one_of_.empty()) return absl::StrCat("one of ", absl::StrJoin(one_of_, ", "));
  if (std::holds_alternative<double*>(dst_)) {
    if (real_min_ && real_max_) return absl::StrCat("a number in [", *real_min_, ", ", *real_max_, "]");
    if (real_max_) return absl::StrCat("a number <= ", *real_max_);
    return real_min_ ? absl::StrCat("a number >= ", *real_min_) : "a number";
  }
  if (std::holds_alternative<int*>(dst_) || std::holds_alternative<int64_t*>(dst_)) {
    if (min_ && max_) return absl::StrCat("an integer in [", *min_, ", ", *max_, "]");
    if (min_) return absl::StrCat("an integer >= ", *min_);
    if (max_) return absl::StrCat("an integer <= ", *max_);
    return "an integer";
  }
  if (is_bool()) return "true or false";
  return "";
}

absl::Status Flag::Set(const std::string& text, const std::string& where) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", why));
  };
  if (auto* b = std::get_if<bool*>(&dst_)) {
    std::optional<bool> v = ParseBool(text);
    if (!v) return bad("expected true or false");
    **b = *v;
  } else if (std::holds_alternative<std::string*>(dst_) ||
             std::holds_alternative<std::vector<std::string>*>(dst_)) {
    if (!one_of_.empty() && std::find(one_of_.begin(), one_of_.end(), text) == one_of_.end()) {
      return bad(absl::StrCat("expected ", Constraint()));
    }
    if (auto* s = std::get_if<std::string*>(&dst_)) **s = text;
    else (*std::get_if<std::vector<std::string>*>(&dst_))->push_back(text);
  } else if (auto* d = std::get_if<double*>(&dst_)) {
    double v = 0;
    if (text.empty() || absl::ascii_isspace(static_cast<unsigned char>(text.front())) ||
        absl::ascii_isspace(static_cast<unsigned char>(text.back())) || !absl::SimpleAtod(text, &v) ||
        !std::isfinite(v)) {
      return bad("expected a finite number");
    }
    if (real_min_ && v < *real_min_) return bad(absl::StrCat("must be >= ", *real_min_));
    if (real_max_ && v > *real_max_) return bad(absl::StrCat("must be <= ", *real_max_));
    **d = v;
  } else {
    int64_t v = 0;
    if (!IsInteger(text) || !absl::SimpleAtoi(text, &v)) return bad("expected an integer");
    const bool narrow = std::holds_alternative<int*>(dst_);
    const int64_t lo = min_.value_or(narrow ? std::numeric_limits<int>::min() : INT64_MIN);
    const int64_t hi = max_.value_or(narrow ? std::numeric_limits<int>::max() : INT64_MAX);
    if (v < lo || v > hi) return bad(absl::StrCat("expected ", Constraint(), ", got ", v));
    if (narrow) **std::get_if<int*>(&dst_) = static_cast<int>(v);
    else **std::get_if<int64_t*>(&dst_) = v;
  }
  was_set_ = true;
  return absl::OkStatus();
}

// --- FlagSet ------------------------------------------------------------------------------------

FlagSet::FlagSet(std::string synopsis, std::string description)
    : synopsis_(std::move(synopsis)), description_(std::move(description)) {}

Flag& FlagSet::AddFlag(std::unique_ptr<Flag> flag) {
  flags_.push_back(std::move(flag));
  return *flags_.back();
}
Flag& FlagSet::Add(std::string name, int* dst, std::string help) {
  return AddFlag(std::unique_ptr<Flag>(new Flag(std::move(name), dst, std::move(help))));
}
Flag& FlagSet::Add(std::string name, int64_t* dst, std::string help) {
  return AddFlag(std::unique_ptr<Flag>(new Flag(std::move(name), dst, std::move(help))));
}
Flag& FlagSet::Add(std::string name, double* dst, std::string help) {
  return AddFlag(std::unique_ptr<Flag>(new Flag(std::move(name), dst, std::move(help))));
}
Flag& FlagSet::Add(std::string name, bool* dst, std::string help) {
  return AddFlag(std::unique_ptr<Flag>(new Flag(std::move(name), dst, std::move(help))));
}
Flag& FlagSet::Add(std::string name, std::string* dst, std::string help) {
  return AddFlag(std::unique_ptr<Flag>(new Flag(std::move(name), dst, std::move(help))));
}
Flag& FlagSet::Add(std::string name, std::vector<std::string>* dst, std::string help) {
  return AddFlag(std::unique_ptr<Flag>(new Flag(std::move(name), dst, std::move(help))));
}

void FlagSet::Positional(std::string meta, std::vector<std::string>* dst, std::string help,
                         size_t min_count) {
  positional_meta_ = std::move(meta);
  positional_ = dst;
  positional_help_ = std::move(help);
  positional_min_ = min_count;
}

Flag* FlagSet::FindMutable(const std::string& name) const {
  const std::string key = Normalize(name);
  for (const auto& f : flags_) {
    if (Normalize(f->name()) == key) return f.get();
  }
  return nullptr;
}
const Flag* FlagSet::Find(const std::string& name) const { return FindMutable(name); }

std::string FlagSet::EnvironmentName(const Flag& flag) const {
  return absl::StrCat(env_prefix_, absl::AsciiStrToUpper(Normalize(flag.name())));
}

absl::Status FlagSet::ApplyEnvironment(absl::Span<const std::pair<std::string, std::string>> env,
                                       absl::Span<const std::string> ignore,
                                       std::vector<std::string>* warnings) {
  if (env_prefix_.empty()) return absl::OkStatus();
  std::vector<std::string> known;
  for (const auto& f : flags_) known.push_back(EnvironmentName(*f));
  for (const auto& [name, value] : env) {
    if (!absl::StartsWith(name, env_prefix_)) continue;
    if (std::find(ignore.begin(), ignore.end(), name) != ignore.end()) continue;
    auto it = std::find(known.begin(), known.end(), name);
    if (it == known.end()) {
      std::string warning = absl::StrCat("environment variable ", name, " matches no flag and is ignored");
      if (const std::string nearest = Nearest(name, known); !nearest.empty()) {
        const size_t k = static_cast<size_t>(std::find(known.begin(), known.end(), nearest) - known.begin());
        absl::StrAppend(&warning, "; nearest: ", nearest, " (--", flags_[k]->name(), ")");
      }
      warnings->push_back(std::move(warning));
      continue;
    }
    Flag& flag = *flags_[static_cast<size_t>(it - known.begin())];
    if (absl::Status s = flag.Set(value, absl::StrCat(name, "='", value, "' (--", flag.name(), ")")); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status FlagSet::UnknownFlag(const std::string& name) const {
  std::vector<std::string> names;
  for (const auto& f : flags_) names.push_back(f->name());
  const std::string nearest = Nearest(Normalize(name), names);
  const size_t limit = std::max<size_t>(2, name.size() / 3);
  std::string hint;
  if (!nearest.empty() && EditDistance(Normalize(name), Normalize(nearest)) <= limit) {
    hint = absl::StrCat(" (did you mean --", nearest, "?)");
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, hint));
}

absl::Status FlagSet::ParseFlag(const std::string& arg, absl::Span<const std::string> args, size_t* i) {
  std::string name = arg.substr(2);
  std::optional<std::string> value;
  if (size_t eq = name.find('='); eq != std::string::npos) {
    value = name.substr(eq + 1);
    name = name.substr(0, eq);
  }
  Flag* flag = FindMutable(name);
  if (flag == nullptr && absl::StartsWith(name, "no")) {
    Flag* negated = FindMutable(name.substr(2));
    if (negated != nullptr && negated->is_bool()) {
      if (value) return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      return negated->Set("false", arg);
    }
  }
  if (flag == nullptr) return UnknownFlag(name);
  if (flag->is_bool()) return flag->Set(value.value_or("true"), arg);
  if (!value) {
    if (*i + 1 >= args.size()) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag->name(), " needs a value (", flag->Synopsis(), ")"));
    }
    value = args[++*i];
    return flag->Set(*value, absl::StrCat("--", flag->name(), " ", *value));
  }
  return flag->Set(*value, arg);
}

absl::Status FlagSet::Parse(absl::Span<const std::string> args) {
  bool flags_done = false;
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (!flags_done && (arg == "-h" || arg == "--help" || arg == "--helpfull")) {
      help_requested_ = true;
      return absl::OkStatus();
    }
    if (!flags_done && arg == "--") {
      flags_done = true;
    } else if (!flags_done && absl::StartsWith(arg, "--")) {
      if (absl::Status s = ParseFlag(arg, args, &i); !s.ok()) return s;
    } else if (!flags_done && arg.size() > 1 && arg[0] == '-') {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg, " (flags start with --)"));
    } else {
      positional.push_back(arg);
    }
  }
  if (positional_ == nullptr && !positional.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", positional[0], "'"));
  }
  if (positional_ != nullptr) {
    if (positional.size() < positional_min_) {
      return absl::InvalidArgumentError(absl::StrCat("missing ", positional_meta_));
    }
    *positional_ = std::move(positional);
  }
  for (const auto& f : flags_) {
    if (f->required() && !f->was_set()) {
      return absl::InvalidArgumentError(absl::StrCat("missing ", f->Synopsis(), " (", f->help(), ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status FlagSet::Parse(int argc, char** argv) {
  std::vector<std::string> args(argv + std::min(argc, 1), argv + argc);
  return Parse(args);
}

std::optional<int> FlagSet::ParseOrExit(absl::Span<const std::string> args) {
  absl::Status s = Parse(args);
  if (!s.ok()) {
    const std::string program = synopsis_.substr(0, synopsis_.find(' '));
    std::fprintf(stderr, "%s: %s\n\n%s", program.c_str(), std::string(s.message()).c_str(), Usage().c_str());
    return 2;
  }
  if (help_requested_) {
    std::fputs(Usage().c_str(), stdout);
    std::fflush(stdout);
    return 0;
  }
  return std::nullopt;
}

std::optional<int> FlagSet::ParseOrExit(int argc, char** argv) {
  std::vector<std::string> args(argv + std::min(argc, 1), argv + argc);
  return ParseOrExit(args);
}

std::string FlagSet::Usage() const {
  std::string out = absl::StrCat("usage: ", synopsis_, "\n");
  if (!description_.empty()) {
    out += "\n";
    AppendWrapped(description_, 0, 0, &out);
    out += "\n";
  }
  if (positional_ != nullptr && !positional_help_.empty()) {
    out += "\n";
    std::string head = absl::StrCat("  ", positional_meta_);
    out += head;
    if (head.size() + 2 > kHelpColumn) out += "\n" + std::string(kHelpColumn, ' ');
    else out += std::string(kHelpColumn - head.size(), ' ');
    AppendWrapped(positional_help_, kHelpColumn, kHelpColumn, &out);
    out += "\n";
  }
  if (!flags_.empty()) out += "\nflags:\n";
  for (const auto& f : flags_) {
    std::string head = absl::StrCat("  ", f->Synopsis());
    out += head;
    if (head.size() + 2 > kHelpColumn) out += "\n" + std::string(kHelpColumn, ' ');
    else out += std::string(kHelpColumn - head.size(), ' ');
    std::string text = f->help();
    if (f->required()) {
      text += " (required)";
    } else if (!f->is_bool() || f->default_text() == "true") {
      std::string def = f->default_text().empty() ? "\"\"" : f->default_text();
      if (absl::EndsWith(f->name(), "_bytes")) {
        int64_t v = 0;
        if (absl::SimpleAtoi(def, &v) && !HumanBytes(v).empty()) def += " (" + HumanBytes(v) + ")";
      }
      text += absl::StrCat(" [default: ", def, "]");
    }
    if (!env_prefix_.empty()) text += absl::StrCat(" [env ", EnvironmentName(*f), "]");
    // Keep each bracketed note on one line.
    bool in_note = false;
    for (char& ch : text) {
      if (ch == '[') in_note = true;
      if (ch == ']') in_note = false;
      if (in_note && ch == ' ') ch = kNoBreakSpace;
    }
    AppendWrapped(text, kHelpColumn, kHelpColumn, &out);
    out += "\n";
  }
  out += "  -h, --help";
  out += std::string(kHelpColumn - 12, ' ');
  out += "print this help to stdout and exit 0\n";
  return out;
}

std::string FlagSet::MarkdownTable() const {
  std::string out = env_prefix_.empty() ? "| flag | default | meaning |\n|---|---|---|\n"
                                        : "| flag | environment | default | meaning |\n|---|---|---|---|\n";
  for (const auto& f : flags_) {
    std::string def = f->default_text().empty() ? "\"\"" : f->default_text();
    std::string def_cell = absl::StrCat("`", def, "`");
    if (absl::EndsWith(f->name(), "_bytes")) {
      int64_t v = 0;
      if (absl::SimpleAtoi(def, &v) && !HumanBytes(v).empty()) def_cell += " (" + HumanBytes(v) + ")";
    }
    std::string meaning = f->help();
    if (const std::string c = f->Constraint(); !c.empty() && !f->is_bool()) meaning += absl::StrCat(" Allowed: ", c, ".");
    absl::StrAppend(&out, "| `--", f->name(), "` | ");
    if (!env_prefix_.empty()) absl::StrAppend(&out, "`", EnvironmentName(*f), "` | ");
    absl::StrAppend(&out, MarkdownCell(def_cell), " | ", MarkdownCell(meaning), " |\n");
  }
  return out;
}

// --- Helpers ------------------------------------------------------------------------------------

std::vector<std::pair<std::string, std::string>> ReadEnvironment() {
  std::vector<std::pair<std::string, std::string>> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string kv = *e;
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) continue;
    out.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
  }
  return out;
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t substitute = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, substitute});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string Nearest(const std::string& name, absl::Span<const std::string> candidates) {
  std::string best;
  size_t best_distance = SIZE_MAX;
  for (const std::string& c : candidates) {
    const size_t d = EditDistance(name, c);
    if (d < best_distance) {
      best = c;
      best_distance = d;
    }
  }
  return best;
}

}  // namespace reformer
