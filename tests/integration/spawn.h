// Integration tests: run a program like a user would and capture what it says (base/subprocess.h,
// under the names the tests use).
#pragma once

#include "base/subprocess.h"

namespace sevemu::testing {

using RunResult = sevemu::ProcessResult;
using sevemu::run_capture;

} // namespace sevemu::testing
