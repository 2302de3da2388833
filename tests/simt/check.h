// A minimal test harness for the simt test programs: each check prints "ok <name>" or
// "FAIL <name>: <detail>"; main returns finish(), non-zero when any check failed.
#pragma once

#include <cstdio>
#include <string>

namespace simt_test {
inline int failures = 0;
inline void check(bool cond, const std::string& name, const std::string& detail = "") {
  if (cond) {
    std::printf("ok %s\n", name.c_str());
  } else {
    ++failures;
    std::printf("FAIL %s%s%s\n", name.c_str(), detail.empty() ? "" : ": ", detail.c_str());
  }
  std::fflush(stdout);
}
inline int finish() {
  std::printf(failures ? "%d check(s) FAILED\n" : "all checks passed\n", failures);
  return failures ? 1 : 0;
}
}  // namespace simt_test
