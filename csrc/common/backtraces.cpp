// FASTCONV_NO_CPP_BACKTRACES=1: c10's errors stop capturing the C++ stack they are thrown
// from. Every c10::Error (TORCH_CHECK) unwinds the stack at construction to record it; on the
// first H200 run an error thrown by fastconv crashed the process there (bench/NOTES.md,
// "First GPU run"), which points at the unwinder reading some library's unwind tables. This
// switch is the diagnosis (the GPU check reruns its raise probe with it) and the way round:
// errors still carry their messages, only the C++ frames are left out. Process-wide, as c10's
// fetcher is: it applies to torch's own errors too, so it is off unless asked for.
#include <c10/util/Logging.h>

#include <cstdlib>
#include <string>

namespace {

const bool installed = [] {
  const char* v = std::getenv("FASTCONV_NO_CPP_BACKTRACES");
  if (v == nullptr || std::string(v) != "1") return false;
  c10::SetStackTraceFetcher(
      std::function<std::string()>([] { return std::string("(C++ stack not captured: FASTCONV_NO_CPP_BACKTRACES=1)"); }));
  return true;
}();

}  // namespace
