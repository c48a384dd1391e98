// The SEV guest of the migration harness's targets (fuzz_migration.cpp) and of the sources that
// write its seed streams (gen_migration_corpus.cpp): the two must agree, or no seed is accepted.
// Policy NODBG, with ES for an SEV-ES guest; Milan's C-bit position.
#pragma once

#include "emulator/machine_config.h"
#include "firmware/sev_api.h"

namespace sevemu::fuzz {

inline emulator::SevGuestConfig migration_fuzz_guest(bool es)
{
    emulator::SevGuestConfig g;
    g.type = emulator::SevGuestConfig::Type::Sev;
    g.id = "sev0";
    g.policy = firmware::policy::NODBG | (es ? firmware::policy::ES : 0);
    g.cbitpos = 51;
    g.reduced_phys_bits = 1;
    return g;
}

} // namespace sevemu::fuzz
