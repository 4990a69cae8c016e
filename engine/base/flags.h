// FlagSet: strict, typed command-line flags for the server and every tool, declared once.
//
// Each flag is declared with a name, a typed destination and its help text; its default is the value
// the destination holds when it is declared (so a default is written once, in the options struct
// the destination belongs to) and Usage() prints it. A flag may carry a range; a value outside it is
// an error naming the flag. No globals: a FlagSet is built where it is used and borrows its
// destinations, which must outlive it.
//
// Syntax: `--name=value`, `--name value`, `--flag` / `--flag=true|false` / `--noflag` for booleans,
// `--` ends the flags. '-' and '_' are interchangeable in names (`--piece-bytes` = `--piece_bytes`).
// `-h`, `--help` (and `--helpfull`) ask for the usage. Parsing is strict: an unknown flag (with the
// nearest known name suggested), a missing or malformed value, a number outside its range, a
// non-finite real, or an unexpected positional argument is an INVALID_ARGUMENT naming it. When a
// flag is given more than once the last value wins (so an environment default can be overridden
// and scripts can append overrides), except for repeatable flags (a vector destination), which
// collect every value.
//
// Environment: with an environment prefix (e.g. "REFORMER_") every flag can also be set as
// PREFIX + NAME (upper case, '-' as '_'); ApplyEnvironment() sets them before Parse() so the
// command line wins, and reports variables with the prefix that match no flag, naming the nearest.
//
// Not thread-safe; use from one thread (start-up).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace reformer {

class Flag {
 public:
  // Inclusive bounds for integer and real flags.
  Flag& Min(int64_t v);
  Flag& Max(int64_t v);
  Flag& Range(int64_t lo, int64_t hi) { return Min(lo).Max(hi); }
  Flag& MinReal(double v);
  Flag& MaxReal(double v);
  Flag& RangeReal(double lo, double hi) { return MinReal(lo).MaxReal(hi); }
  // Allowed values of a string flag.
  Flag& OneOf(std::vector<std::string> values);
  // Usage() placeholder for the value, e.g. "DIR", "N", "HOST:PORT" (default from the type).
  Flag& Meta(std::string meta);
  // Parse() fails when the flag is not given (and its environment variable is not set).
  Flag& Required();

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  // The default (the destination's value when declared), formatted as on the command line.
  const std::string& default_text() const { return default_text_; }
  bool is_bool() const { return std::holds_alternative<bool*>(dst_); }
  bool required() const { return required_; }
  bool was_set() const { return was_set_; }
  // "--name <meta>" (or "--name" for a boolean).
  std::string Synopsis() const;
  // Allowed values in words ("an integer >= 1", "one of a|b"), for the help text.
  std::string Constraint() const;

 private:
  friend class FlagSet;
  using Destination = std::variant<int*, int64_t*, double*, bool*, std::string*, std::vector<std::string>*>;
  Flag(std::string name, Destination dst, std::string help);
  // Parses `text` into the destination; `where` names the source in the error.
  absl::Status Set(const std::string& text, const std::string& where);
  std::string Current() const;

  std::string name_;
  Destination dst_;
  std::string help_;
  std::string default_text_;
  std::string meta_;
  std::optional<int64_t> min_, max_;
  std::optional<double> real_min_, real_max_;
  std::vector<std::string> one_of_;
  bool required_ = false;
  bool was_set_ = false;
};

class FlagSet {
 public:
  // `synopsis` follows "usage: " (e.g. "reformer-cli score [flags] FILE..."); `description` is
  // printed under it.
  FlagSet(std::string synopsis, std::string description);
  FlagSet(const FlagSet&) = delete;
  FlagSet& operator=(const FlagSet&) = delete;

  Flag& Add(std::string name, int* dst, std::string help);
  Flag& Add(std::string name, int64_t* dst, std::string help);
  Flag& Add(std::string name, double* dst, std::string help);
  Flag& Add(std::string name, bool* dst, std::string help);
  Flag& Add(std::string name, std::string* dst, std::string help);
  // A repeatable flag: every occurrence appends its value (e.g. --stop A --stop B).
  Flag& Add(std::string name, std::vector<std::string>* dst, std::string help);
  // Positional arguments (e.g. FILE...): at least `min_count`. Without this, any positional
  // argument is an error.
  void Positional(std::string meta, std::vector<std::string>* dst, std::string help, size_t min_count);

  // Every flag can also be set as `prefix` + NAME (see the file comment).
  void SetEnvironmentPrefix(std::string prefix) { env_prefix_ = std::move(prefix); }
  std::string EnvironmentName(const Flag& flag) const;

  // Sets flags from `env` (name, value pairs, e.g. from ReadEnvironment()). Variables with the
  // prefix that match no flag and are not in `ignore` add a warning naming the nearest flag's
  // variable. INVALID_ARGUMENT naming the variable when a value does not parse.
  absl::Status ApplyEnvironment(absl::Span<const std::pair<std::string, std::string>> env,
                                absl::Span<const std::string> ignore, std::vector<std::string>* warnings);

  // Parses the arguments after the program name. OK with help_requested() when -h/--help was given
  // (nothing else is checked then).
  absl::Status Parse(absl::Span<const std::string> args);
  absl::Status Parse(int argc, char** argv);  // argv[0] is the program and skipped
  bool help_requested() const { return help_requested_; }

  // Parse() for a main(): nullopt to continue; otherwise the exit code after printing the usage to
  // stdout (help: 0) or the error and the usage to stderr (2).
  std::optional<int> ParseOrExit(int argc, char** argv);
  std::optional<int> ParseOrExit(absl::Span<const std::string> args);

  std::string Usage() const;
  // A Markdown table of the flags: flag, environment variable (with a prefix), default, meaning.
  std::string MarkdownTable() const;

  const Flag* Find(const std::string& name) const;
  const std::vector<std::unique_ptr<Flag>>& flags() const { return flags_; }

 private:
  Flag& AddFlag(std::unique_ptr<Flag> flag);
  Flag* FindMutable(const std::string& name) const;
  absl::Status ParseFlag(const std::string& arg, absl::Span<const std::string> args, size_t* i);
  absl::Status UnknownFlag(const std::string& name) const;

  std::string synopsis_;
  std::string description_;
  std::vector<std::unique_ptr<Flag>> flags_;
  std::string env_prefix_;
  std::string positional_meta_, positional_help_;
  std::vector<std::string>* positional_ = nullptr;
  size_t positional_min_ = 0;
  bool help_requested_ = false;
};

// The process environment as (name, value) pairs.
std::vector<std::pair<std::string, std::string>> ReadEnvironment();

// Levenshtein distance, and the candidate nearest to `name` ("" when there is none).
size_t EditDistance(const std::string& a, const std::string& b);
std::string Nearest(const std::string& name, absl::Span<const std::string> candidates);

}  // namespace reformer
