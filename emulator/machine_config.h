// sevemu — MachineConfig: everything a Machine is built from, typed (STYLE.md rule 1). The
// `sevemu` command line (INTERFACES.md §3) and tests fill it in; Machine::create() validates it.
#pragma once

#include "cpu/cpu_model.h"
#include "devices/debug_exit.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace sevemu::emulator {

// -serial stdio | file:PATH | none; Callback is for tests and embedders.
struct SerialConfig {
    enum class Kind : uint8_t { None, Stdio, File, Callback };
    Kind kind { Kind::None };
    std::string path;                       // Kind::File
    std::function<void(uint8_t)> callback;  // Kind::Callback
};

// -object sev-guest,... / sev-snp-guest,... with QEMU's property names (qapi/qom.json
// SevGuestProperties, SevSnpGuestProperties). Checked against the CPU model by the CLI the way
// QEMU's sev_common_kvm_init() checks them. An SEV guest (policy without ES) runs through
// SevRuntime (emulator/sev_runtime.h); SEV-ES and SEV-SNP guests are refused for now.
struct SevGuestConfig {
    enum class Type : uint8_t { Sev, SevSnp };
    Type type { Type::Sev };
    std::string id;
    uint64_t policy {};               // SEV: 32-bit policy (default 0x1); SNP: 64-bit (default 0x30000)
    uint32_t cbitpos {};
    uint32_t reduced_phys_bits {};
    bool kernel_hashes {};
    // SEV only
    std::optional<uint32_t> handle;
    std::string dh_cert_file, session_file;
    // SNP only (decoded from base64)
    std::vector<uint8_t> id_block, id_auth, host_data, guest_visible_workarounds;
    bool author_key_enabled {};
};

// The most vCPUs -smp accepts (a sane bound for a one-thread scheduler; one socket of cores).
inline constexpr uint32_t kMaxVcpus = 64;

struct MachineConfig {
    uint64_t memory_size { 128ull << 20 }; // QEMU's default -m 128M
    CpuModel cpu_model { CpuModel::Milan };
    unsigned smp { 1 };

    std::string kernel;  // path; required
    std::string initrd;  // -initrd as given (Multiboot: comma-separated module list)
    std::string append;  // -append

    SerialConfig serial;
    std::optional<devices::DebugExitConfig> debug_exit;
    bool no_reboot { false };
    // -no-shutdown: a guest power-off, shutdown or halt that nothing can wake stops the machine
    // instead of ending run(); QMP keeps serving (pmemsave, query-sev...) until quit.
    bool no_shutdown { false };

    std::vector<std::string> trace_patterns; // -trace
    std::string trace_file;                  // -D (empty: stderr)
    std::string platform_dir;                // --platform (AMD-SP persistent state)

    std::optional<SevGuestConfig> confidential_guest; // -machine confidential-guest-support=ID

    // Stop after this many instructions (0: never). Not a QEMU option; tests and fuzzers use it.
    uint64_t max_instructions { 0 };
};

} // namespace sevemu::emulator
