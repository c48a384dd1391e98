#include "tools/sevemu-host/ccp.h"

#include <cstdio>

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
    c->m_params = FirmwareParams::for_model(model);
    mmu::MemoryConfig cfg;
    cfg.dram_size = 16ull << 20;
    cfg.key_slots = c->m_params.max_asid + 1;
    cfg.cache_pages = 64;
    auto mc = mmu::MemoryController::create(cfg);
    if (!mc)
        return make_unexpected(HostError { "cannot create the emulated memory: " + std::string(mmu::mem_error_name(mc.error())) });
    c->m_mc = std::move(*mc);
    auto store = PlatformStore::open(platform);
    if (!store)
        return make_unexpected(HostError { store.error().message });
    c->m_store = std::move(*store);
    c->m_fw = std::make_unique<Firmware>(*c->m_mc, c->m_params, *c->m_store, trace);
    c->m_mbox = std::make_unique<devices::PspMailbox>(*c->m_fw, devices::psp_version_for(model), c->m_irq);
    if (!c->m_bus.add(kMmioBase, devices::PspMailbox::kMmioSize, *c->m_mbox))
        return make_unexpected(HostError { "cannot map the PSP mailbox" });
    // Probe: interrupts off and acknowledged, then on (sp-pci.c / psp-dev.c).
    auto const& r = c->m_mbox->layout();
    c->m_bus.write(kMmioBase + r.inten, 4, 0);
    c->m_bus.write(kMmioBase + r.intsts, 4, 0xFFFFFFFF);
    c->m_bus.write(kMmioBase + r.inten, 4, 0xFFFFFFFF);
    return c;
}

uint16_t Ccp::ring(uint32_t cmd, uint64_t buffer)
{
    auto const& r = m_mbox->layout();
    m_bus.write(kMmioBase + r.cmdbuf_lo, 4, uint32_t(buffer));
    m_bus.write(kMmioBase + r.cmdbuf_hi, 4, uint32_t(buffer >> 32));
    m_bus.write(kMmioBase + r.cmdresp, 4, (cmd << 16) | devices::PspMailbox::kCmdRespIoc);
    // The command completes synchronously; the "interrupt" is acknowledged as the IRQ handler does.
    uint32_t resp = uint32_t(m_bus.read(kMmioBase + r.cmdresp, 4).first);
    uint32_t sts = uint32_t(m_bus.read(kMmioBase + r.intsts, 4).first);
    m_bus.write(kMmioBase + r.intsts, 4, sts);
    return uint16_t(resp & 0xFFFF);
}

uint32_t Ccp::feature_register() { return uint32_t(m_bus.read(kMmioBase + m_mbox->layout().feature, 4).first); }

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
    auto once = [&]() -> uint16_t {
        if (id == CommandId::INIT) {
            InitBuf b {};
            return run(CommandId::INIT, b);
        }
        InitExBuf b {};
        b.length = kInitExLength;
        b.nv_paddr = kNvBuffer;
        b.nv_length = kNvSize;
        return run(CommandId::INIT_EX, b);
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
    uint16_t s = once();
    if (s == uint16_t(Status::SECURE_DATA_INVALID)) {
        std::fprintf(stderr, "sevemu-host: warning: the platform's NV store was damaged and has been erased; new identity\n");
        s = once();
    }
    if (s != 0)
        return make_unexpected(HostError { command_error(id, s) });
    TRY(sync_nv());
    m_mc->wbinvd(); // WBINVD on every CPU before DF_FLUSH, as sev-dev.c does
    s = run0(CommandId::DF_FLUSH);
    if (s != 0)
        return make_unexpected(HostError { command_error(CommandId::DF_FLUSH, s) });
    return {};
}

Result<PlatformStatusBuf, HostError> Ccp::platform_status()
{
    PlatformStatusBuf b {};
    uint16_t s = run(CommandId::PLATFORM_STATUS, b);
    if (s != 0)
        return make_unexpected(HostError { command_error(CommandId::PLATFORM_STATUS, s) });
    return b;
}

} // namespace sevemu::host
