// Test harness for the hypervisor layer: a host (DRAM, firmware, PSP mailbox on an MMIO bus,
// host memory, the PSP driver, the SEV host state) as KVM would find it on a machine.
#pragma once

#include "devices/amd_sp.h"
#include "devices/psp_mailbox.h"
#include "cpu/io.h"
#include "emulator/vmm/vm.h"
#include "firmware/firmware.h"
#include "firmware/platform_store.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <unistd.h>

namespace sevemu::test {

using namespace sevemu::vmm;
namespace fw = sevemu::firmware;


// One platform directory for the whole run: generating its RSA-4096 test roots takes seconds.
inline std::filesystem::path const& platform_dir()
{
    static std::filesystem::path dir = [] {
        std::string tmpl = (std::filesystem::temp_directory_path() / "sevemu-vmm-XXXXXX").string();
        if (!::mkdtemp(tmpl.data()))
            std::abort();
        return std::filesystem::path(tmpl);
    }();
    static struct Cleanup {
        ~Cleanup() { std::error_code ec; std::filesystem::remove_all(dir, ec); }
    } cleanup;
    return dir;
}

struct Host {
    static constexpr uint64_t kBar = devices::AmdSp::kBar;
    Trace trace { nullptr };
    std::unique_ptr<mmu::MemoryController> mc;
    devices::IrqLine irq;
    devices::Bus mmio;
    // The AMD-SP as sevemu builds it (devices/amd_sp.h); `firmware` names its firmware.
    std::unique_ptr<devices::AmdSp> sp;
    fw::Firmware* firmware { nullptr };
    std::unique_ptr<HostMemory> host;
    std::optional<PspDriver> psp;
    std::unique_ptr<SevHost> sev;

    // `dir`: the platform directory (chip identity); two Hosts with two directories are two
    // independent machines (the migration tests).
    explicit Host(std::filesystem::path const& dir = platform_dir())
    {
        auto params = fw::FirmwareParams::for_model(CpuModel::Milan);
        mmu::MemoryConfig cfg;
        cfg.dram_size = 64ull << 20;
        cfg.key_slots = params.max_asid + 1;
        cfg.cache_pages = 1024;
        mc = std::move(*mmu::MemoryController::create(cfg));
        auto a = devices::AmdSp::create(*mc, mmio, irq, dir, params, devices::PspVersion::V2, trace);
        REQUIRE(a.has_value());
        sp = std::move(*a);
        firmware = &sp->firmware();
        host = std::make_unique<HostMemory>(*mc, Spa(16ull << 20), 48ull << 20);
        auto d = PspDriver::create(*host, mmio, sp->bar(), sp->psp_version());
        REQUIRE(d.has_value());
        psp.emplace(std::move(*d));
        SevHostConfig hc;
        hc.max_asid = params.max_asid;
        hc.min_sev_asid = params.min_sev_asid;
        sev = std::make_unique<SevHost>(*psp, *mc, hc);
    }

    // User memory: a buffer in the hypervisor's direct map, filled with `bytes`.
    Hva user_buffer(std::span<uint8_t const> bytes, size_t size = 0)
    {
        size = std::max(size, bytes.size());
        auto spa = host->alloc_pages((std::max<size_t>(size, 1) + kPageSize - 1) / kPageSize);
        REQUIRE(spa.has_value());
        REQUIRE(host->copy_to(direct_map(*spa), bytes).has_value());
        return direct_map(*spa);
    }
    template <class T>
    Hva user_struct(T const& t) { return user_buffer({ reinterpret_cast<uint8_t const*>(&t), sizeof t }); }
    template <class T>
    T read_struct(Hva at)
    {
        T t {};
        REQUIRE(host->copy_from(at, { reinterpret_cast<uint8_t*>(&t), sizeof t }).has_value());
        return t;
    }
    Bytes read_user(Hva at, size_t n)
    {
        Bytes b(n);
        REQUIRE(host->copy_from(at, b).has_value());
        return b;
    }

    // The PDH as `sevctl export` gets it through /dev/sev (PDH_CERT_EXPORT).
    Bytes export_pdh()
    {
        auto pdh = host->alloc_pages(1);
        auto chain = host->alloc_pages(2);
        REQUIRE((pdh && chain));
        fw::PdhCertExportBuf b {};
        b.pdh_cert_paddr = pdh->value;
        b.pdh_cert_length = 0x824;
        b.certs_paddr = chain->value;
        b.certs_length = 3 * 0x824;
        auto r = psp->do_cmd(fw::CommandId::PDH_CERT_EXPORT, { reinterpret_cast<uint8_t*>(&b), sizeof b });
        REQUIRE(r.has_value());
        return read_user(direct_map(*pdh), 0x824);
    }
};

inline int op(Vm& vm, uint32_t id, Hva data, uint32_t* error = nullptr)
{
    kvm_sev_cmd cmd {};
    cmd.id = id;
    cmd.data = data.value;
    int r = vm.memory_encrypt_op(cmd);
    if (error)
        *error = cmd.error;
    return r;
}

inline Bytes pattern(size_t n, uint8_t seed)
{
    Bytes b(n);
    for (size_t i = 0; i < n; ++i)
        b[i] = uint8_t(seed + i * 7 + (i >> 8));
    return b;
}

// A CPU's devices for tests whose guests reach none: ports read all ones, writes go nowhere.
struct NoIo final : cpu::IoHandler {
    uint32_t port_in(uint16_t, uint8_t) override { return ~0u; }
    void port_out(uint16_t, uint8_t, uint32_t) override {}
    uint64_t mmio_read(Spa, uint8_t) override { return ~0ull; }
    void mmio_write(Spa, uint8_t, uint64_t) override {}
};

} // namespace sevemu::test
