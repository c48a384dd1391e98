#include "tools/sevemu-host/ccp.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace sevemu::host {

std::string command_error(CommandId id, uint16_t status)
{
    auto const* info = Firmware::find_command(uint32_t(id));
    char buf[160];
    std::snprintf(buf, sizeof buf, "SEV command %s failed: %s (0x%02x)", info ? std::string(info->name).c_str() : "?",
        std::string(status_name(status)).c_str(), status);
    return buf;
}

Result<std::unique_ptr<Ccp>, HostError> Ccp::open(std::filesystem::path const& platform, CpuModel model, Trace& trace,
    bool init_ex)
{
    std::unique_ptr<Ccp> c(new Ccp);
    if (init_ex)
        c->m_init_ex_file = platform / "init_ex_nv.bin";
    auto params = FirmwareParams::for_model(model);
    mmu::MemoryConfig cfg;
    cfg.dram_size = 16ull << 20;
    cfg.key_slots = params.max_asid + 1;
    cfg.cache_pages = 64;
    auto mc = mmu::MemoryController::create(cfg);
    if (!mc)
        return make_unexpected(HostError { "cannot create the emulated memory: " + std::string(mmu::mem_error_name(mc.error())) });
    c->m_mc = std::move(*mc);
    auto sp = devices::AmdSp::create(*c->m_mc, c->m_bus, c->m_irq, platform, model, trace);
    if (!sp)
        return make_unexpected(HostError { sp.error().message });
    c->m_sp = std::move(*sp);
    // Probe: interrupts off and acknowledged, then on (sp-pci.c / psp-dev.c).
    uint64_t bar = c->m_sp->bar();
    auto const& r = c->m_sp->mailbox().layout();
    c->m_bus.write(bar + r.inten, 4, 0);
    c->m_bus.write(bar + r.intsts, 4, 0xFFFFFFFF);
    c->m_bus.write(bar + r.inten, 4, 0xFFFFFFFF);
    // The driver's one DMA page (sev->cmd_buf) is the scratch page: the host allocator owns
    // exactly that page, the rest of this small DRAM is the tool's blob and NV areas.
    c->m_host = std::make_unique<vmm::HostMemory>(*c->m_mc, Spa(kScratch), kPageSize);
    auto driver = vmm::PspDriver::create(*c->m_host, c->m_bus, bar, c->m_sp->psp_version());
    if (!driver)
        return make_unexpected(HostError { std::string("the AMD-SP did not answer the driver's probe (") + std::strerror(-driver.error()) + ")" });
    c->m_driver = std::make_unique<vmm::PspDriver>(std::move(*driver));
    return c;
}

Result<uint16_t, HostError> Ccp::command(CommandId id, std::span<uint8_t> data)
{
    auto r = m_driver->do_cmd(id, data);
    if (r)
        return uint16_t(0);
    // -EIO: the firmware ran the command and answered with a non-zero status.
    if (r.error().err == -EIO)
        return r.error().psp_ret;
    auto const* info = Firmware::find_command(uint32_t(id));
    return make_unexpected(HostError { "SEV command " + (info ? std::string(info->name) : std::string("?")) + " failed in the driver: "
        + std::strerror(-r.error().err) });
}

Result<void, HostError> Ccp::succeed(CommandId id, uint16_t status)
{
    if (status != 0)
        return make_unexpected(HostError { command_error(id, status) });
    return {};
}

uint32_t Ccp::feature_register()
{
    return uint32_t(m_bus.read(m_sp->bar() + m_sp->mailbox().layout().feature, 4).first);
}

void Ccp::put(uint64_t pa, std::span<const uint8_t> data) { (void)m_mc->write(Spa(pa), data, mmu::KeyId::none()); }

Bytes Ccp::get(uint64_t pa, size_t n)
{
    Bytes out(n);
    (void)m_mc->read(Spa(pa), out, mmu::KeyId::none());
    return out;
}

Result<void, HostError> Ccp::sync_nv()
{
    if (m_init_ex_file.empty())
        return {};
    auto w = write_file_atomic(m_init_ex_file, get(kNvBuffer, kNvSize));
    if (!w)
        return make_unexpected(HostError { w.error().message });
    return {};
}

Result<void, HostError> Ccp::erase_init_ex_nv()
{
    if (m_init_ex_file.empty())
        return {};
    put(kNvBuffer, Bytes(kNvSize, 0xFF));
    return sync_nv();
}

Result<void, HostError> Ccp::platform_init()
{
    CommandId id = m_init_ex_file.empty() ? CommandId::INIT : CommandId::INIT_EX;
    auto once = [&]() -> Result<uint16_t, HostError> {
        if (id == CommandId::INIT) {
            InitBuf b {};
            return status_of(CommandId::INIT, b);
        }
        InitExBuf b {};
        b.length = kInitExLength;
        b.nv_paddr = kNvBuffer;
        b.nv_length = kNvSize;
        return status_of(CommandId::INIT_EX, b);
    };
    if (id == CommandId::INIT_EX) {
        // sev_read_init_ex_file: a missing file is an erased NV area.
        Bytes nv(kNvSize, 0xFF);
        auto r = read_regular_file(m_init_ex_file, file_limits::kNvState);
        if (!r && r.error().kind != FileError::Kind::NotFound)
            return make_unexpected(HostError { r.error().message });
        if (r) {
            if (r->size() != kNvSize)
                return make_unexpected(HostError { m_init_ex_file.string() + ": not a 32 KiB INIT_EX NV file" });
            nv = std::move(*r);
        }
        put(kNvBuffer, nv);
    }
    uint16_t s = TRY(once());
    if (s == uint16_t(Status::SECURE_DATA_INVALID)) {
        std::fprintf(stderr, "sevemu-host: warning: the platform's NV store was damaged and has been erased; new identity\n");
        s = TRY(once());
    }
    TRY(succeed(id, s));
    TRY(sync_nv());
    m_mc->wbinvd(); // WBINVD on every CPU before DF_FLUSH, as sev-dev.c does
    return run0(CommandId::DF_FLUSH);
}

Result<PlatformStatusBuf, HostError> Ccp::platform_status()
{
    PlatformStatusBuf b {};
    TRY(run(CommandId::PLATFORM_STATUS, b));
    return b;
}

} // namespace sevemu::host
