// sevemu — the one top-level handler of every program. Errors are values throughout sevemu; an
// exception that reaches a program's main is a bug. It ends as one line "PROG: internal error:
// WHAT" and EX_SOFTWARE (70, sysexits.h), never as std::terminate's abort with a core dump; the
// tests check that none of their runs prints it.
#pragma once

#include <cstdio>
#include <exception>
#include <utility>

namespace sevemu {

inline constexpr int kExitInternalError = 70; // EX_SOFTWARE

template<typename Run, typename... Args>
int run_guarded(char const* program, Run&& run, Args&&... args) noexcept
{
    try {
        return std::forward<Run>(run)(std::forward<Args>(args)...);
    } catch (std::exception const& e) {
        std::fprintf(stderr, "%s: internal error: %s\n", program, e.what());
    } catch (...) {
        std::fprintf(stderr, "%s: internal error: unknown exception\n", program);
    }
    return kExitInternalError;
}

} // namespace sevemu
