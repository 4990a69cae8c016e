#include "server/request/exception_status.h"

#include <exception>
#include <new>

#include "absl/strings/str_cat.h"

namespace reformer::serving {

absl::Status CurrentExceptionStatus(const char* where) {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the server ran out of memory while ", where, "; retry later or send less"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("exception while ", where, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat("unknown exception while ", where));
  }
}

}  // namespace reformer::serving
