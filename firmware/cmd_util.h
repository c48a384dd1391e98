// sevemu — small helpers shared by the command handlers (cmd_platform.cpp, cmd_guest.cpp, cmd_migration.cpp);
// internal to firmware/.
#pragma once

#include "firmware/sev_cert.h"
#include "firmware/sev_status.h"

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <string>

namespace sevemu::firmware {

// "0x1f": addresses and lengths in trace notes.
inline std::string hex(uint64_t v)
{
    char b[24];
    std::snprintf(b, sizeof b, "0x%" PRIx64, v);
    return b;
}

// The firmware status a certificate refusal maps to.
inline Status cert_status(CertError e) { return Status(cert_error_status(e)); }

} // namespace sevemu::firmware
