// Tests that use the host CPU as their oracle must know its vendor: sevemu models AMD, and where
// Intel and AMD differ (which NaN DPPS returns, BSF/BSR with a zero source) the tests expect AMD's
// documented behaviour.
#pragma once

#include <cpuid.h>
#include <cstring>
#include <string>

namespace sevemu::testing {

// The host's vendor string (CPUID leaf 0: EBX, EDX, ECX), e.g. "AuthenticAMD", "GenuineIntel".
inline std::string host_vendor()
{
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d))
        return "unknown";
    char v[13] {};
    std::memcpy(v, &b, 4);
    std::memcpy(v + 4, &d, 4);
    std::memcpy(v + 8, &c, 4);
    return v;
}

inline bool host_is_amd()
{
    static bool const amd = host_vendor() == "AuthenticAMD";
    return amd;
}

} // namespace sevemu::testing
