// sevemu — firmware core: the dispatch table, the mailbox entry point, the state machine and the
// firmware's door to DRAM. Command handlers live in cmd_platform.cpp, cmd_guest.cpp
// and cmd_migration.cpp.
#include "firmware/firmware.h"

#include "firmware/platform_store.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace sevemu::firmware {

std::string_view status_name(uint16_t raw)
{
    switch (raw) {
    case 0x00 ... 0x1D:
    case 0x1F ... 0x27:
        return status_name(Status(raw));
    default:
        return "UNKNOWN_STATUS";
    }
}

std::string_view platform_state_name(PlatformState s)
{
    switch (s) {
    case PlatformState::UNINIT:
        return "UNINIT";
    case PlatformState::INIT:
        return "INIT";
    case PlatformState::WORKING:
        return "WORKING";
    }
    return "?";
}

std::string_view guest_state_name(GuestState s)
{
    switch (s) {
    case GuestState::UNINIT:
        return "UNINIT";
    case GuestState::LUPDATE:
        return "LUPDATE";
    case GuestState::LSECRET:
        return "LSECRET";
    case GuestState::RUNNING:
        return "RUNNING";
    case GuestState::SUPDATE:
        return "SUPDATE";
    case GuestState::RUPDATE:
        return "RUPDATE";
    case GuestState::SENT:
        return "SENT";
    }
    return "?";
}

std::string_view asid_state_name(AsidState s)
{
    switch (s) {
    case AsidState::Clean:
        return "clean";
    case AsidState::Dirty:
        return "dirty";
    case AsidState::Pending:
        return "allocated (pending)";
    case AsidState::InUse:
        return "in use";
    }
    return "?";
}

// The part's facts (API version and build, ASID ranges, C-bit, SEV-ES) from the one table in
// base/epyc_model.h, which also answers CPUID: the firmware and CPUID 8000_001F agree by
// construction. QUIRKS.md says how the BIOS-set SEV-ES/SEV split compares with real parts.
FirmwareParams FirmwareParams::for_model(CpuModel model)
{
    auto const& m = cpu_model_info(model);
    FirmwareParams p;
    p.model = model;
    p.api_major = m.api_major;
    p.api_minor = m.api_minor;
    p.build = m.build;
    p.max_asid = m.num_encrypted_guests;
    p.min_sev_asid = m.min_sev_asid;
    p.es_supported = cpu_model_has_sev_es(model);
    p.cbit_position = m.c_bit;
    return p;
}

Firmware::Guest::~Guest()
{
    secure_zero(vek.data(), vek.size());
    secure_zero(&keys, sizeof keys);
    secure_zero(measure.data(), measure.size());
}

Firmware::Firmware(mmu::MemoryController& mc, FirmwareParams params, PlatformStore& store, Trace& trace)
    : m_mc(mc)
    , m_params(params)
    , m_store(store)
    , m_trace(trace)
{
    m_guests.resize(kMaxGuests);
    m_asids.resize(size_t(m_params.max_asid) + 1);
}

Firmware::~Firmware() { m_persistent.wipe(); }

// ---------------------------------------------------------------------------------------------
// The dispatch table (STYLE.md rule 5): one row per command this firmware implements. Commands
// not listed — DOWNLOAD_FIRMWARE, RING_BUFFER, SWAP_*, every SNP command and
// unknown IDs — return INVALID_COMMAND, as AMD-ASPFW sev_dispatch.c does for IDs without a handler.

template <class Buf, Result<void, Status> (Firmware::*H)(Buf&)>
Result<void, Status> Firmware::thunk(Firmware& fw, std::span<uint8_t> raw)
{
    static_assert(std::is_trivially_copyable_v<Buf>);
    Buf b;
    std::memcpy(&b, raw.data(), sizeof b);
    auto r = (fw.*H)(b);
    std::memcpy(raw.data(), &b, sizeof b);
    return r;
}

template <Result<void, Status> (Firmware::*H)()>
Result<void, Status> Firmware::thunk0(Firmware& fw, std::span<uint8_t>)
{
    return (fw.*H)();
}

namespace {
constexpr uint8_t U = state_bit(PlatformState::UNINIT);
constexpr uint8_t I = state_bit(PlatformState::INIT);
constexpr uint8_t W = state_bit(PlatformState::WORKING);
constexpr uint8_t kAnyPlatform = 0xff;
constexpr uint8_t LU = state_bit(GuestState::LUPDATE);
constexpr uint8_t LS = state_bit(GuestState::LSECRET);
constexpr uint8_t RUN = state_bit(GuestState::RUNNING);
constexpr uint8_t SU = state_bit(GuestState::SUPDATE);
constexpr uint8_t RU = state_bit(GuestState::RUPDATE);
constexpr uint8_t SENT = state_bit(GuestState::SENT);
constexpr uint8_t kAnyGuest = LU | LS | RUN | SU | RU | SENT;
constexpr uint8_t kNoGuest = 0;
} // namespace

std::span<Firmware::CommandInfo const> Firmware::command_table()
{
    using C = CommandId;
    using M = BufMode;
    // clang-format off
    static constexpr CommandInfo table[] = {
        // id                    name                   size                       copy             platform  guest       handler
        { C::INIT,               "INIT",                sizeof(InitBuf),           M::In,           U,        kNoGuest,   &thunk<InitBuf, &Firmware::cmd_init> },
        { C::SHUTDOWN,           "SHUTDOWN",            0,                         M::None,         kAnyPlatform, kNoGuest, &thunk0<&Firmware::cmd_shutdown> },
        { C::PLATFORM_RESET,     "PLATFORM_RESET",      0,                         M::None,         U,        kNoGuest,   &thunk0<&Firmware::cmd_platform_reset> },
        { C::PLATFORM_STATUS,    "PLATFORM_STATUS",     sizeof(PlatformStatusBuf), M::Out,          kAnyPlatform, kNoGuest, &thunk<PlatformStatusBuf, &Firmware::cmd_platform_status> },
        { C::PEK_GEN,            "PEK_GEN",             0,                         M::None,         I,        kNoGuest,   &thunk0<&Firmware::cmd_pek_gen> },
        { C::PEK_CSR,            "PEK_CSR",             sizeof(PekCsrBuf),         M::InOutOnError, I | W,    kNoGuest,   &thunk<PekCsrBuf, &Firmware::cmd_pek_csr> },
        { C::PEK_CERT_IMPORT,    "PEK_CERT_IMPORT",     sizeof(PekCertImportBuf),  M::In,           I,        kNoGuest,   &thunk<PekCertImportBuf, &Firmware::cmd_pek_cert_import> },
        { C::PDH_CERT_EXPORT,    "PDH_CERT_EXPORT",     sizeof(PdhCertExportBuf),  M::InOutOnError, I | W,    kNoGuest,   &thunk<PdhCertExportBuf, &Firmware::cmd_pdh_cert_export> },
        { C::PDH_GEN,            "PDH_GEN",             0,                         M::None,         I | W,    kNoGuest,   &thunk0<&Firmware::cmd_pdh_gen> },
        { C::DF_FLUSH,           "DF_FLUSH",            0,                         M::None,         kAnyPlatform, kNoGuest, &thunk0<&Firmware::cmd_df_flush> },
        { C::GET_ID,             "GET_ID",              sizeof(GetIdBuf),          M::InOutOnError, kAnyPlatform, kNoGuest, &thunk<GetIdBuf, &Firmware::cmd_get_id> },
        { C::INIT_EX,            "INIT_EX",             sizeof(InitExBuf),         M::In,           U,        kNoGuest,   &thunk<InitExBuf, &Firmware::cmd_init_ex> },
        { C::NOP,                "NOP",                 0,                         M::None,         kAnyPlatform, kNoGuest, &thunk0<&Firmware::cmd_nop> },
        { C::DECOMMISSION,       "DECOMMISSION",        sizeof(HandleBuf),         M::In,           W,        kAnyGuest,  &thunk<HandleBuf, &Firmware::cmd_decommission> },
        { C::ACTIVATE,           "ACTIVATE",            sizeof(ActivateBuf),       M::In,           W,        kAnyGuest & ~SENT, &thunk<ActivateBuf, &Firmware::cmd_activate> },
        { C::DEACTIVATE,         "DEACTIVATE",          sizeof(HandleBuf),         M::In,           W,        kAnyGuest,  &thunk<HandleBuf, &Firmware::cmd_deactivate> },
        { C::GUEST_STATUS,       "GUEST_STATUS",        sizeof(GuestStatusBuf),    M::InOut,        I | W,    kAnyGuest,  &thunk<GuestStatusBuf, &Firmware::cmd_guest_status> },
        { C::COPY,               "COPY",                sizeof(CopyBuf),           M::In,           W,        kAnyGuest,  &thunk<CopyBuf, &Firmware::cmd_copy> },
        { C::ACTIVATE_EX,        "ACTIVATE_EX",         sizeof(ActivateExBuf),     M::In,           W,        kAnyGuest & ~SENT, &thunk<ActivateExBuf, &Firmware::cmd_activate_ex> },
        { C::LAUNCH_START,       "LAUNCH_START",        sizeof(LaunchStartBuf),    M::InOut,        I | W,    kNoGuest,   &thunk<LaunchStartBuf, &Firmware::cmd_launch_start> },
        { C::LAUNCH_UPDATE_DATA, "LAUNCH_UPDATE_DATA",  sizeof(LaunchUpdateBuf),   M::In,           W,        LU,         &thunk<LaunchUpdateBuf, &Firmware::cmd_launch_update_data> },
        { C::LAUNCH_UPDATE_VMSA, "LAUNCH_UPDATE_VMSA",  sizeof(LaunchUpdateBuf),   M::In,           W,        LU,         &thunk<LaunchUpdateBuf, &Firmware::cmd_launch_update_vmsa> },
        { C::LAUNCH_MEASURE,     "LAUNCH_MEASURE",      sizeof(LaunchMeasureBuf),  M::InOutOnError, W,        LU,         &thunk<LaunchMeasureBuf, &Firmware::cmd_launch_measure> },
        { C::LAUNCH_SECRET,      "LAUNCH_SECRET",       sizeof(TransportBuf),      M::In,           W,        LS,         &thunk<TransportBuf, &Firmware::cmd_launch_secret> },
        { C::LAUNCH_FINISH,      "LAUNCH_FINISH",       sizeof(HandleBuf),         M::In,           W,        LS,         &thunk<HandleBuf, &Firmware::cmd_launch_finish> },
        { C::ATTESTATION,        "ATTESTATION",         sizeof(AttestationBuf),    M::InOutOnError, W,        LS | RUN | SU | SENT, &thunk<AttestationBuf, &Firmware::cmd_attestation> },
        { C::SEND_START,         "SEND_START",          sizeof(SendStartBuf),      M::InOutOnError, W,        RUN,        &thunk<SendStartBuf, &Firmware::cmd_send_start> },
        { C::SEND_UPDATE_DATA,   "SEND_UPDATE_DATA",    sizeof(TransportBuf),      M::InOutOnError, W,        SU,         &thunk<TransportBuf, &Firmware::cmd_send_update_data> },
        { C::SEND_UPDATE_VMSA,   "SEND_UPDATE_VMSA",    sizeof(TransportBuf),      M::InOutOnError, W,        SU,         &thunk<TransportBuf, &Firmware::cmd_send_update_vmsa> },
        { C::SEND_FINISH,        "SEND_FINISH",         sizeof(HandleBuf),         M::In,           W,        SU,         &thunk<HandleBuf, &Firmware::cmd_send_finish> },
        { C::SEND_CANCEL,        "SEND_CANCEL",         sizeof(HandleBuf),         M::In,           W,        SU,         &thunk<HandleBuf, &Firmware::cmd_send_cancel> },
        { C::RECEIVE_START,      "RECEIVE_START",       sizeof(LaunchStartBuf),    M::InOut,        I | W,    kNoGuest,   &thunk<LaunchStartBuf, &Firmware::cmd_receive_start> },
        { C::RECEIVE_UPDATE_DATA, "RECEIVE_UPDATE_DATA", sizeof(TransportBuf),     M::In,           W,        RU,         &thunk<TransportBuf, &Firmware::cmd_receive_update_data> },
        { C::RECEIVE_UPDATE_VMSA, "RECEIVE_UPDATE_VMSA", sizeof(TransportBuf),     M::In,           W,        RU,         &thunk<TransportBuf, &Firmware::cmd_receive_update_vmsa> },
        { C::RECEIVE_FINISH,     "RECEIVE_FINISH",      sizeof(HandleBuf),         M::In,           W,        RU,         &thunk<HandleBuf, &Firmware::cmd_receive_finish> },
        { C::DBG_DECRYPT,        "DBG_DECRYPT",         sizeof(DebugBuf),          M::In,           W,        kAnyGuest,  &thunk<DebugBuf, &Firmware::cmd_dbg_decrypt> },
        { C::DBG_ENCRYPT,        "DBG_ENCRYPT",         sizeof(DebugBuf),          M::In,           W,        kAnyGuest,  &thunk<DebugBuf, &Firmware::cmd_dbg_encrypt> },
    };
    // clang-format on
    static_assert(std::ranges::all_of(table, [](CommandInfo const& c) { return c.buffer_size <= kMaxCommandBuffer; }),
        "a command buffer is larger than Firmware::kMaxCommandBuffer");
    return table;
}

Firmware::CommandInfo const* Firmware::find_command(uint32_t cmd_id)
{
    for (auto const& c : command_table()) {
        if (uint32_t(c.id) == cmd_id)
            return &c;
    }
    return nullptr;
}

uint16_t Firmware::execute(uint32_t cmd_id, Spa cmd_buffer)
{
    CommandInfo const* info = find_command(cmd_id);
    if (!info) {
        if (m_trace.enabled("psp")) {
            char line[96];
            std::snprintf(line, sizeof line, "command 0x%02x (not implemented) -> INVALID_COMMAND", cmd_id);
            m_trace.emit("psp", line);
        }
        return uint16_t(Status::INVALID_COMMAND);
    }
    m_current = info;
    m_note.clear();
    m_state_lines.clear();
    std::array<uint8_t, kMaxCommandBuffer> buf {};
    std::span<uint8_t> view(buf.data(), info->buffer_size);
    Status status = Status::SUCCESS;

    // The command buffer itself must be DRAM the firmware may touch; checking the whole range
    // before running means a command's write-back can never fail after its state change.
    if (info->mode != BufMode::None) {
        if (!check_range(cmd_buffer.value, info->buffer_size)) {
            char b[64];
            std::snprintf(b, sizeof b, "(command buffer 0x%" PRIx64 " is not DRAM)", cmd_buffer.value);
            note(b);
            status = Status::INVALID_ADDRESS;
        }
        else if (info->mode != BufMode::Out && !read_dram(cmd_buffer.value, view, mmu::KeyId::none()))
            status = Status::INVALID_ADDRESS;
    }
    if (status == Status::SUCCESS) {
        auto r = info->run(*this, view);
        status = r ? Status::SUCCESS : r.error();
        bool write_back = (status == Status::SUCCESS && info->mode != BufMode::None && info->mode != BufMode::In)
            || (status == Status::INVALID_LEN && info->mode == BufMode::InOutOnError);
        if (write_back && !write_dram(cmd_buffer.value, view, mmu::KeyId::none()))
            status = Status::INVALID_ADDRESS; // unreachable: the range was checked above
    }
    if (m_trace.enabled("psp")) {
        std::string line(info->name);
        if (!m_note.empty())
            line += " " + m_note;
        line += " -> ";
        line += status_name(status);
        m_trace.emit("psp", line);
    }
    for (auto const& l : m_state_lines)
        m_trace.emit("psp.state", l);
    m_state_lines.clear();
    m_current = nullptr;
    return uint16_t(status);
}

void Firmware::state_trace(std::string line)
{
    if (!m_trace.enabled("psp.state"))
        return;
    if (m_current)
        m_state_lines.push_back(std::move(line));
    else
        m_trace.emit("psp.state", line);
}

void Firmware::note(std::string text)
{
    if (!m_note.empty())
        m_note += ' ';
    m_note += text;
}

// ---------------------------------------------------------------------------------------------
// State checks and transitions (STYLE.md rule 7).

Result<void, Status> Firmware::check_platform_state() const
{
    if (m_current->platform_states != kAnyPlatform && !(m_current->platform_states & state_bit(m_state)))
        return make_unexpected(Status::INVALID_PLATFORM_STATE);
    return {};
}

Result<void, Status> Firmware::check_guest_state(Guest const& g) const
{
    if (!(m_current->guest_states & state_bit(g.state)))
        return make_unexpected(Status::INVALID_GUEST_STATE);
    return {};
}

// Handles run 1..1024; 0 is never valid (AMD-ASPFW sev_guest.c). A handle naming a free slot is as invalid
// as one out of range: a host cannot act on a guest that does not exist.
Result<Firmware::Guest*, Status> Firmware::find_guest(uint32_t handle)
{
    if (handle == 0 || handle > kMaxGuests || !m_guests[handle - 1])
        return make_unexpected(Status::INVALID_GUEST);
    return m_guests[handle - 1].get();
}

std::optional<GuestState> Firmware::guest_state(uint32_t handle) const
{
    if (handle == 0 || handle > kMaxGuests || !m_guests[handle - 1])
        return std::nullopt;
    return m_guests[handle - 1]->state;
}

std::optional<uint32_t> Firmware::guest_asid(uint32_t handle) const
{
    if (handle == 0 || handle > kMaxGuests || !m_guests[handle - 1])
        return std::nullopt;
    return m_guests[handle - 1]->asid;
}

AsidState Firmware::asid_state(uint32_t asid) const { return asid < m_asids.size() ? m_asids[asid].state : AsidState::Clean; }

uint32_t Firmware::effective_max_asid() const
{
    uint32_t slots = m_mc.key_slot_count();
    return std::min<uint32_t>(m_params.max_asid, slots ? slots - 1 : 0);
}

[[noreturn]] static void state_bug(char const* what)
{
    std::fprintf(stderr, "sevemu: firmware bug: illegal %s transition\n", what);
    std::abort();
}

// Platform transitions, AMD-ASPFW sev_plat.c state table.
void Firmware::transition(PlatformState to)
{
    PlatformState from = m_state;
    if (from == to)
        return;
    using P = PlatformState;
    bool legal = (from == P::UNINIT && to == P::INIT)       // INIT, INIT_EX
        || (to == P::UNINIT)                                   // SHUTDOWN
        || (from == P::INIT && to == P::WORKING)              // LAUNCH_START, RECEIVE_START
        || (from == P::WORKING && to == P::INIT);             // DECOMMISSION of the last guest
    if (!legal)
        state_bug("platform");
    m_state = to;
    if (m_trace.enabled("psp.state")) {
        std::string line = "platform " + std::string(platform_state_name(from)) + " -> " + std::string(platform_state_name(to));
        if (m_current)
            line += " (" + std::string(m_current->name) + ")";
        state_trace(std::move(line));
    }
}

// Guest transitions, AMD-ASPFW sev_guest.c state table.
void Firmware::transition(Guest& g, GuestState to)
{
    GuestState from = g.state;
    if (from == to)
        return;
    using G = GuestState;
    bool legal = (from == G::UNINIT && (to == G::LUPDATE || to == G::RUPDATE)) || (from == G::LUPDATE && to == G::LSECRET)
        || (from == G::LSECRET && to == G::RUNNING) || (from == G::RUNNING && to == G::SUPDATE)
        || (from == G::SUPDATE && (to == G::SENT || to == G::RUNNING)) || (from == G::RUPDATE && to == G::RUNNING)
        || to == G::UNINIT; // DECOMMISSION, SHUTDOWN
    if (!legal)
        state_bug("guest");
    g.state = to;
    if (m_trace.enabled("psp.state")) {
        std::string line = "guest " + std::to_string(g.handle) + ": " + std::string(guest_state_name(from)) + " -> "
            + std::string(guest_state_name(to));
        if (m_current)
            line += " (" + std::string(m_current->name) + ")";
        state_trace(std::move(line));
    }
}

void Firmware::set_asid(uint32_t asid, AsidState to, uint32_t owner, bool trace)
{
    auto& a = m_asids[asid];
    AsidState from = a.state;
    a.state = to;
    a.owner = (to == AsidState::Pending || to == AsidState::InUse) ? owner : 0;
    if (trace && from != to && m_trace.enabled("psp.state")) {
        std::string line = "asid " + std::to_string(asid) + ": " + std::string(asid_state_name(from)) + " -> "
            + std::string(asid_state_name(to));
        if (owner)
            line += " (guest " + std::to_string(owner) + ")";
        state_trace(std::move(line));
    }
}

// ---------------------------------------------------------------------------------------------
// DRAM (ARCHITECTURE.md rule 2): by physical address, through the memory controller.

// AMD-ASPFW x86_copy.c validate_address_range: the C-bit is masked, and anything that is not DRAM
// (MMIO, beyond the top of memory, an address that wraps) is INVALID_ADDRESS. Without this a
// host could point the firmware's writes at device registers or have it read past DRAM.
Result<uint64_t, Status> Firmware::check_range(uint64_t paddr, uint64_t len) const
{
    uint64_t a = paddr & ~(1ull << m_params.cbit_position);
    if (a + len < a)
        return make_unexpected(Status::INVALID_ADDRESS);
    if (!m_mc.is_dram(Spa(a), len ? len : 1))
        return make_unexpected(Status::INVALID_ADDRESS);
    // The SEV-ES TMR holds the firmware's VMSA checksums: no command may read or write it on
    // the host's behalf (x86_copy.c refuses TMR addresses), or a host could forge them.
    if (m_tmr_valid && a < m_tmr_paddr + kTmrSize && m_tmr_paddr < a + (len ? len : 1))
        return make_unexpected(Status::INVALID_ADDRESS);
    return a;
}

Result<void, Status> Firmware::read_dram(uint64_t paddr, std::span<uint8_t> out, mmu::KeyId key)
{
    uint64_t a = TRY(check_range(paddr, out.size()));
    if (out.empty())
        return {};
    if (!m_mc.read(Spa(a), out, key))
        return make_unexpected(Status::INVALID_ADDRESS);
    return {};
}

Result<void, Status> Firmware::write_dram(uint64_t paddr, std::span<uint8_t const> in, mmu::KeyId key)
{
    uint64_t a = TRY(check_range(paddr, in.size()));
    if (in.empty())
        return {};
    if (!m_mc.write(Spa(a), in, key))
        return make_unexpected(Status::INVALID_ADDRESS);
    return {};
}

Result<void, Status> Firmware::transfer(uint64_t src, mmu::KeyId src_key, uint64_t dst, mmu::KeyId dst_key, uint64_t len)
{
    uint64_t s = TRY(check_range(src, len));
    uint64_t d = TRY(check_range(dst, len));
    constexpr uint64_t kChunk = 0x5000; // AMD-ASPFW works in 0x5000-byte scratch chunks
    Bytes buf(std::min(len, kChunk));
    // Copy backwards when the destination overlaps the source from above, so every byte is read
    // before it is overwritten (memmove semantics).
    bool backwards = d > s && d < s + len;
    uint64_t done = 0;
    while (done < len) {
        uint64_t n = std::min(kChunk, len - done);
        uint64_t off = backwards ? len - done - n : done;
        std::span<uint8_t> chunk(buf.data(), n);
        if (!m_mc.read(Spa(s + off), chunk, src_key) || !m_mc.write(Spa(d + off), chunk, dst_key))
            return make_unexpected(Status::INVALID_ADDRESS);
        done += n;
    }
    secure_zero(buf.data(), buf.size());
    return {};
}

} // namespace sevemu::firmware
