// sevemu tests — a host that drives the firmware exactly as Linux's ccp driver does: command
// buffers placed in DRAM, their physical address and the command written to the PSP mailbox
// registers over the MMIO bus, the status read back from CmdResp. Each TestPlatform has its own
// temporary platform directory (never the user's) that is removed afterwards.
#pragma once

#include "devices/amd_sp.h"
#include "devices/bus.h"
#include "devices/psp_mailbox.h"
#include "firmware/firmware.h"
#include "firmware/platform_store.h"
#include "mmu/memory_controller.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace sevemu::test {

using namespace sevemu::firmware;
namespace fs = std::filesystem;

// A new directory sevemu-TAG-XXXXXX under `base` (by default the system's temporary directory).
inline fs::path make_temp_dir(char const* tag, fs::path const& base = fs::temp_directory_path())
{
    std::string tmpl = (base / (std::string("sevemu-") + tag + "-XXXXXX")).string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data()))
        throw std::runtime_error("mkdtemp failed");
    return fs::path(buf.data());
}

// A temporary directory removed on destruction.
struct TempDir {
    fs::path path;
    explicit TempDir(char const* tag = "fw", fs::path const& base = fs::temp_directory_path())
        : path(make_temp_dir(tag, base))
    {
    }
    ~TempDir()
    {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    TempDir(TempDir const&) = delete;
    TempDir& operator=(TempDir const&) = delete;
};

inline uint16_t st(Status s) { return uint16_t(s); }

class TestPlatform {
public:
    static constexpr uint64_t kMmioBase = devices::AmdSp::kBar;
    static constexpr uint64_t kCmdBuf = 0x1000;    // the driver's scratch page
    static constexpr uint64_t kData = 0x10000;     // certificate / blob area (64 KiB .. 1 MiB)
    static constexpr uint64_t kGuest = 0x100000;   // guest pages from 1 MiB
    static constexpr uint64_t kDramSize = 32ull << 20;

    explicit TestPlatform(FirmwareParams params = FirmwareParams::for_model(CpuModel::Milan), fs::path dir = {})
        : m_params(params)
    {
        if (dir.empty()) {
            m_tmp = std::make_unique<TempDir>("platform");
            dir = m_tmp->path;
        }
        m_dir = dir;
        trace.set_output(nullptr);
        trace.set_capture(true);
        trace.enable("psp");
        boot();
    }

    // A power cycle: new DRAM, new firmware, same platform directory (fuses and SPI flash).
    void restart()
    {
        sp.reset();
        fw = nullptr;
        store = nullptr;
        mbox = nullptr;
        mc.reset();
        bus = devices::Bus {};
        boot();
    }

    fs::path const& dir() const { return m_dir; }

    // --- Raw mailbox access, as the driver does it.
    uint16_t issue(uint32_t cmd, uint64_t buffer_pa, bool ioc = true)
    {
        bus.write(kMmioBase + mbox->layout().cmdbuf_lo, 4, uint32_t(buffer_pa));
        bus.write(kMmioBase + mbox->layout().cmdbuf_hi, 4, uint32_t(buffer_pa >> 32));
        bus.write(kMmioBase + mbox->layout().cmdresp, 4, (cmd << 16) | (ioc ? 1u : 0u));
        uint32_t resp = uint32_t(bus.read(kMmioBase + mbox->layout().cmdresp, 4).first);
        if (!(resp & devices::PspMailbox::kCmdRespResp))
            throw std::runtime_error("mailbox did not complete");
        if (ioc) {
            uint32_t sts = uint32_t(bus.read(kMmioBase + mbox->layout().intsts, 4).first);
            bus.write(kMmioBase + mbox->layout().intsts, 4, sts); // the PSP IRQ handler's ack
        }
        return uint16_t(resp & 0xFFFF);
    }

    // A command with a typed buffer: copied into DRAM, run, copied back.
    template <class Buf>
    uint16_t run(CommandId id, Buf& b, uint64_t at = kCmdBuf)
    {
        poke(at, &b, sizeof b);
        uint16_t s = issue(uint32_t(id), at);
        peek_into(at, &b, sizeof b);
        return s;
    }
    uint16_t run0(CommandId id) { return issue(uint32_t(id), 0); }

    // --- DRAM.
    void poke(uint64_t pa, void const* data, size_t n, mmu::KeyId key = mmu::KeyId::none())
    {
        if (!mc->write(Spa(pa), std::span(static_cast<uint8_t const*>(data), n), key))
            throw std::runtime_error("poke outside DRAM");
    }
    void poke(uint64_t pa, std::span<const uint8_t> data, mmu::KeyId key = mmu::KeyId::none()) { poke(pa, data.data(), data.size(), key); }
    void peek_into(uint64_t pa, void* out, size_t n, mmu::KeyId key = mmu::KeyId::none())
    {
        if (!mc->read(Spa(pa), std::span(static_cast<uint8_t*>(out), n), key))
            throw std::runtime_error("peek outside DRAM");
    }
    Bytes peek(uint64_t pa, size_t n, mmu::KeyId key = mmu::KeyId::none())
    {
        Bytes out(n);
        peek_into(pa, out.data(), n, key);
        return out;
    }

    // --- Conveniences (each REQUIREs nothing; callers check statuses).
    uint16_t init(uint32_t flags = 0)
    {
        InitBuf b {};
        b.flags = flags;
        if (flags & kInitFlagEs) {
            b.tmr_paddr = kTmr;
            b.tmr_length = kTmrSize;
        }
        return run(CommandId::INIT, b);
    }
    // What Linux does at probe: INIT, WBINVD on all CPUs, DF_FLUSH.
    uint16_t probe(uint32_t flags = 0)
    {
        uint16_t s = init(flags);
        if (s)
            return s;
        mc->wbinvd();
        return run0(CommandId::DF_FLUSH);
    }
    PlatformStatusBuf platform_status()
    {
        PlatformStatusBuf b {};
        if (run(CommandId::PLATFORM_STATUS, b) != 0)
            throw std::runtime_error("PLATFORM_STATUS failed");
        return b;
    }
    GuestStatusBuf guest_status(uint32_t handle)
    {
        GuestStatusBuf b {};
        b.handle = handle;
        run(CommandId::GUEST_STATUS, b);
        return b;
    }
    // LAUNCH_START without a session; returns the status and sets `handle`.
    uint16_t launch_start(uint32_t policy, uint32_t& handle, uint32_t share_with = 0)
    {
        LaunchStartBuf b {};
        b.handle = share_with;
        b.policy = policy;
        uint16_t s = run(CommandId::LAUNCH_START, b);
        handle = s == 0 ? b.handle : 0;
        return s;
    }
    uint16_t activate(uint32_t handle, uint32_t asid)
    {
        ActivateBuf b { handle, asid };
        return run(CommandId::ACTIVATE, b);
    }
    uint16_t deactivate(uint32_t handle)
    {
        HandleBuf b { handle };
        return run(CommandId::DEACTIVATE, b);
    }
    uint16_t decommission(uint32_t handle)
    {
        HandleBuf b { handle };
        return run(CommandId::DECOMMISSION, b);
    }
    uint16_t update_data(uint32_t handle, uint64_t pa, uint32_t len)
    {
        LaunchUpdateBuf b {};
        b.handle = handle;
        b.paddr = pa;
        b.length = len;
        return run(CommandId::LAUNCH_UPDATE_DATA, b);
    }
    uint16_t measure(uint32_t handle, std::array<uint8_t, 48>* out = nullptr)
    {
        LaunchMeasureBuf b {};
        b.handle = handle;
        b.measure_paddr = kData;
        b.measure_len = 48;
        uint16_t s = run(CommandId::LAUNCH_MEASURE, b);
        if (s == 0 && out)
            peek_into(kData, out->data(), 48);
        return s;
    }
    uint16_t finish(uint32_t handle)
    {
        HandleBuf b { handle };
        return run(CommandId::LAUNCH_FINISH, b);
    }
    // A guest in RUNNING with an ASID: LAUNCH_START, ACTIVATE, one page of data, MEASURE, FINISH.
    uint32_t running_guest(uint32_t policy, uint32_t asid)
    {
        uint32_t h = 0;
        if (launch_start(policy, h) || activate(h, asid) || update_data(h, kGuest, 4096) || measure(h) || finish(h))
            throw std::runtime_error("could not bring a guest to RUNNING");
        return h;
    }

    static constexpr uint64_t kTmr = 0x100000 * 8; // 8 MiB, 1 MiB aligned

    FirmwareParams m_params;
    std::unique_ptr<TempDir> m_tmp;
    fs::path m_dir;
    std::unique_ptr<mmu::MemoryController> mc;
    Trace trace;
    devices::IrqLine irq;
    int irq_edges { 0 };
    devices::Bus bus;
    // The AMD-SP as sevemu and sevemu-host build it (devices/amd_sp.h); the pointers below name
    // its parts for the tests.
    std::unique_ptr<devices::AmdSp> sp;
    PlatformStore* store { nullptr };
    Firmware* fw { nullptr };
    devices::PspMailbox* mbox { nullptr };

private:
    void boot()
    {
        mmu::MemoryConfig mcfg;
        mcfg.dram_size = kDramSize;
        mcfg.key_slots = m_params.max_asid + 1;
        mcfg.cache_pages = 512;
        auto m = mmu::MemoryController::create(mcfg);
        if (!m)
            throw std::runtime_error("memory controller");
        mc = std::move(*m);
        irq.connect([this](bool level) {
            if (level)
                ++irq_edges;
        });
        auto a = devices::AmdSp::create(*mc, bus, irq, m_dir, m_params, devices::PspVersion::V2, trace);
        if (!a)
            throw std::runtime_error(a.error().message);
        sp = std::move(*a);
        store = &sp->store();
        fw = &sp->firmware();
        mbox = &sp->mailbox();
        bus.write(kMmioBase + mbox->layout().inten, 4, 0xFFFFFFFF);
    }
};

} // namespace sevemu::test
