// Fuzz harness `ghcb`: the GHCB protocol as a hostile SEV-ES guest speaks it to the hypervisor
// layer (emulator/vmm/vcpu_es.cpp, ghcb.h; KVM's sev_handle_vmgexit and its MSR protocol, GHCB
// specification 56421). A fresh SEV-ES VM per input (KVM_SEV_ES_INIT, or KVM_SEV_INIT2 on a
// KVM_X86_SEV_ES_VM), 128 KiB of RAM at GPA 0, one vCPU whose VMSA LAUNCH_UPDATE_VMSA encrypted,
// on the host of tests/emulator/vmm (AMD-SP, PSP driver, SevHost) with the fixed identity of
// fuzz_fixed.h. The "CPU" is this harness's executor: each VMRUN is the guest writing its GHCB
// page and the GHCB MSR from the input and executing VMGEXIT, so every request goes through
// Vcpu::run() exactly as a real #VMEXIT(VMGEXIT) does — handle_exit_es, handle_vmgexit, the
// VMM's exits (port I/O, MMIO, the hypercall, AP reset hold), the completions, and the reply
// written back to the GHCB before the next VMRUN (unmap_ghcb); the next VMRUN is where the
// harness looks at the reply.
//
// Input:
//   byte 0      the VM: bit 0 KVM_SEV_INIT2 on a KVM_X86_SEV_ES_VM (GHCB protocol 2 offered;
//               with bit 1 set, ghcb_version 1), else KVM_SEV_ES_INIT (protocol 1 only)
//   then up to kMaxRequests requests, each:
//     u64 the GHCB MSR (VMCB 0x0A0) at VMGEXIT: GHCBInfo (bits 11:0) != 0 is an MSR-protocol
//         request, else the GPA of the GHCB page;
//     u8 k (mod 17), k patches of the GHCB page, applied in order at VMGEXIT when that page is
//         guest RAM: u16 offset (mod 4096), u8 length, that many bytes (cut at the page's end);
//         the rest of the page is what it held (zeros at first, then the last reply there);
//     u8 the VMM's answers: IN values, MMIO read values (a pattern of this byte).
// Properties checked for every request:
//   - it ends in a reply to the guest, a termination request (ExitSevTerm) or a clean error for
//     the VMM (ExitInternalError, KVM_RUN's -EINVAL/-EFAULT); no other exit, and at most one
//     VMM exit per byte of the largest scratch area (64 KiB) plus one;
//   - MSR protocol: the reply code answers the request (0x002 -> 0x001, 0x004 -> 0x005,
//     0x006 -> 0x007, 0x080 -> 0x081); 0x012 and 0x100 terminate with the reason bits of the
//     MSR; any other value is left as it was and nothing else changes; no guest memory is
//     written;
//   - GHCB page: a GPA of 0 or outside RAM is "no GHCB" (nothing read or written, the MSR as it
//     was); otherwise the reply has SW_EXITINFO1 valid and 0 (done), 1 (an event for the guest)
//     or 2 (refused, SW_EXITINFO2 a GHCB_ERR_* reason 1..6); a refused request reached the VMM
//     with no exit and changed nothing but the GHCB's reply fields: guest RAM, the VM's
//     shared-regions list, AP jump table and migration control, the vCPU's state (its XCR0 for
//     CPUID aside, which KVM too takes from the GHCB before it validates);
//   - the reply's valid bitmap is exactly SW_EXITINFO1/2, plus RAX, RBX, RCX, RDX when not
//     refused (sev_es_sync_to_ghcb); the hypervisor wrote no other byte of the GHCB page outside
//     its shared buffer, and that buffer only when the request's scratch area lay in it;
//   - guest RAM outside the GHCB page changes only inside the request's scratch area (the
//     SW_SCRATCH GPA the guest marked valid, 64 KiB at most); the VMSA page never changes;
//   - the VM's shared-regions list changes only through a hypercall exit, the AP jump table only
//     through an accepted AP_JUMP_TABLE set; a non-string IN returns the VMM's value in RAX and a
//     hypercall the VMM's answer.
#include "fuzz_check.h"
#include "fuzz_fixed.h"

#include "devices/amd_sp.h"
#include "devices/psp_mailbox.h"
#include "emulator/vmm/vcpu.h"
#include "emulator/vmm/vm.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <variant>

using namespace sevemu;
using namespace sevemu::fuzz;
using namespace sevemu::vmm;
using namespace sevemu::cpu::svm;

namespace {

constexpr uint64_t kRamPages = 32, kRamSize = kRamPages * kPageSize;
constexpr int kMaxRequests = 6;
constexpr uint32_t kPolicyEs = 1u << 2;                   // SEV policy bit 2: SEV-ES (SEV API 55766 §3)
constexpr unsigned kMaxExitsPerRequest = 64 * 1024 + 1;  // one per byte of a 16-page scratch area, + 1
constexpr uint64_t kTsc = 0x123456789ABull;
constexpr char kBackToGuest[] = "fuzz: the request was answered, the guest runs again";

// The host of the hypervisor layer, as tests/emulator/vmm/vmm_harness.h builds it, once per
// process (the platform's INIT happens at the first VM; later VMs reuse it).
struct Rig {
    test::TempDir dir { "fuzz-ghcb", fuzz_tmp_base() };
    Trace trace { nullptr };
    std::unique_ptr<mmu::MemoryController> mc;
    devices::IrqLine irq;
    devices::Bus mmio;
    std::unique_ptr<devices::AmdSp> sp;
    std::unique_ptr<HostMemory> host;
    std::optional<PspDriver> psp;
    std::unique_ptr<SevHost> sev;
    Spa ram;     // the guest's RAM, zeroed for every input
    Spa ioctl;   // one page for the ioctls' structures (user memory)

    Rig()
    {
        write_fixed_identity(dir.path, make_reference());
        auto params = fixed_params();
        mmu::MemoryConfig cfg;
        cfg.dram_size = 64ull << 20;
        cfg.key_slots = params.max_asid + 1;
        cfg.cache_pages = 1024;
        auto m = mmu::MemoryController::create(cfg);
        FUZZ_CHECK(m.has_value(), "memory controller");
        mc = std::move(*m);
        auto a = devices::AmdSp::create(*mc, mmio, irq, dir.path, params, devices::PspVersion::V2, trace);
        FUZZ_CHECK(a.has_value(), "AmdSp::create");
        sp = std::move(*a);
        host = std::make_unique<HostMemory>(*mc, Spa(16ull << 20), 48ull << 20);
        auto d = PspDriver::create(*host, mmio, sp->bar(), sp->psp_version());
        FUZZ_CHECK(d.has_value(), "PspDriver::create");
        psp.emplace(std::move(*d));
        SevHostConfig hc;
        hc.max_asid = params.max_asid;
        hc.min_sev_asid = params.min_sev_asid;
        sev = std::make_unique<SevHost>(*psp, *mc, hc);
        auto r = host->alloc_pages(kRamPages);
        auto i = host->alloc_pages(1);
        FUZZ_CHECK(r.has_value() && i.has_value(), "host pages");
        ram = *r;
        ioctl = *i;
    }

    Bytes read(Spa at, size_t n)
    {
        Bytes b(n);
        FUZZ_CHECK(mc->read(at, b, mmu::KeyId::none()).has_value(), "DRAM read at %#llx", (unsigned long long)at.value);
        return b;
    }
    void write(Spa at, std::span<uint8_t const> b)
    {
        FUZZ_CHECK(mc->write(at, b, mmu::KeyId::none()).has_value(), "DRAM write at %#llx", (unsigned long long)at.value);
    }
    // A KVM_MEMORY_ENCRYPT_OP with its structure in user memory.
    template <class T>
    int op(Vm& vm, uint32_t id, T const* data, uint32_t* error = nullptr)
    {
        kvm_sev_cmd cmd {};
        cmd.id = id;
        if (data) {
            FUZZ_CHECK(host->copy_to(direct_map(ioctl), { reinterpret_cast<uint8_t const*>(data), sizeof *data }).has_value(),
                "ioctl page");
            cmd.data = direct_map(ioctl).value;
        }
        int r = vm.memory_encrypt_op(cmd);
        if (error)
            *error = cmd.error;
        return r;
    }
};

struct Patch {
    uint16_t offset;
    std::span<uint8_t const> bytes;
};
struct Request {
    uint64_t msr;
    std::vector<Patch> patches;
    uint8_t answer;
};

// The guest: each VMRUN with a request pending is that request's VMGEXIT (the GHCB page patched,
// the GHCB MSR set, EXITCODE VMEXIT_VMGEXIT); a VMRUN without one is the guest being resumed
// after the reply, which ends run() with kBackToGuest.
class GuestScript final : public SvmExecutor {
public:
    GuestScript(Rig& rig, std::function<void()> entered) : m_rig(rig), m_entered(std::move(entered)) {}
    void load(Request const& r) { m_next = &r; }
    bool pending() const { return m_next != nullptr; }
    // The VMCB as the hypervisor left it at the last VMRUN (the MSR protocol's reply).
    Vmcb const& last_vmcb() const { return m_last; }

    Result<void, std::string> vmrun(Spa vmcb, Spa, GuestGprs&) override
    {
        auto v = read_vmcb(*m_rig.mc, vmcb);
        FUZZ_CHECK(v.has_value(), "VMCB read");
        m_last = *v;
        if (!m_next)
            return Unexpected(std::string(kBackToGuest));
        Request const& r = *m_next;
        m_next = nullptr;
        uint64_t page = r.msr & ~0xFFFull;
        if (page < kRamSize && !r.patches.empty()) {
            Bytes g = m_rig.read(m_rig.ram + page, kPageSize);
            for (auto const& p : r.patches) {
                size_t n = std::min<size_t>(p.bytes.size(), kPageSize - p.offset);
                std::memcpy(g.data() + p.offset, p.bytes.data(), n);
            }
            m_rig.write(m_rig.ram + page, g);
        }
        // VMRUN delivered what EVENTINJ held (APM vol 2 §15.20: the CPU clears its valid bit), the
        // guest ran, wrote the GHCB MSR and left with VMGEXIT.
        v->control.event_inj = 0;
        v->control.event_inj_err = 0;
        v->control.exit_code = exitcode::SVM_EXIT_VMGEXIT;
        v->control.exit_info_1 = 0;
        v->control.exit_info_2 = 0;
        v->control.exit_int_info = 0;
        v->control.ghcb_gpa = r.msr;
        FUZZ_CHECK(write_vmcb(*m_rig.mc, vmcb, *v).has_value(), "VMCB write");
        m_written = *v;
        m_entered();
        return {};
    }
    // The VMCB at the last VMGEXIT, as the CPU left it for the hypervisor.
    Vmcb const& written() const { return m_written; }
    std::optional<uint64_t> host_tsc() const override { return kTsc; }

private:
    Rig& m_rig;
    std::function<void()> m_entered;
    Request const* m_next {};
    Vmcb m_last {}, m_written {};
};

uint64_t u64_at(Bytes const& b, size_t off)
{
    uint64_t v;
    std::memcpy(&v, b.data() + off, 8);
    return v;
}
bool bit_valid(Bytes const& page, size_t off)
{
    unsigned bit = ghcb_valid_bit(off);
    return (page[offsetof(Ghcb, valid_bitmap) + bit / 8] >> (bit % 8)) & 1;
}

// What of the VM and the vCPU a refused request must leave as it was.
struct VmState {
    std::vector<std::pair<uint64_t, uint64_t>> shared;
    uint64_t ap_jump_table {}, migration_control {};
    uint32_t event_inj {}, event_inj_err {}, int_state {}, int_ctl {};
    uint64_t apic_base {}, ghcb_msr {};
    bool irq_window {}, protected_ {}, first_sipi {}, nmi_masked {};
    uint8_t ap_reset_hold {};
    bool operator==(VmState const&) const = default;
};

VmState capture(Vm& vm, Vcpu& v)
{
    VmState s;
    for (auto const& r : vm.shared_regions())
        s.shared.emplace_back(r.gfn_start, r.npages);
    s.ap_jump_table = vm.ap_jump_table();
    s.migration_control = vm.migration_control();
    auto m = v.migration_state();
    s.event_inj = m.event_inj;
    s.event_inj_err = m.event_inj_err;
    s.int_state = m.int_state;
    s.int_ctl = m.int_ctl;
    s.apic_base = m.apic_base;
    s.ghcb_msr = m.ghcb_msr;
    s.irq_window = m.irq_window;
    s.protected_ = m.guest_state_protected;
    s.first_sipi = m.received_first_sipi;
    s.nmi_masked = m.nmi_masked;
    s.ap_reset_hold = m.ap_reset_hold;
    return s;
}

// The VMM's side of KVM_HC_MAP_GPA_RANGE, as sevemu's (emulator/sev_runtime.cpp
// SevRuntime::map_gpa_range): attributes other than the page size (<= 1 GiB) and the
// encryption bit are -KVM_EINVAL; else the VM's shared-regions list is updated.
uint64_t vmm_map_gpa_range(Vm& vm, ExitHypercall const& hc)
{
    uint64_t attrs = hc.args[2];
    if ((attrs & ~(0xFull | KVM_MAP_GPA_RANGE_ENCRYPTED)) || (attrs & 0xF) > KVM_MAP_GPA_RANGE_PAGE_SZ_1G)
        return uint64_t(-int64_t(KVM_EINVAL));
    vm.map_gpa_range(hc.args[0] >> kPageShift, hc.args[1], attrs & KVM_MAP_GPA_RANGE_ENCRYPTED);
    return 0;
}

// The MSR protocol's reply code for a request code, 0 for "left as it was" (or termination).
uint64_t msr_reply_code(uint64_t req)
{
    switch (req) {
    case ghcb_msr::SEV_INFO_REQ: return ghcb_msr::SEV_INFO_RESP;
    case ghcb_msr::CPUID_REQ: return ghcb_msr::CPUID_RESP;
    case ghcb_msr::AP_RESET_HOLD_REQ: return ghcb_msr::AP_RESET_HOLD_RESP;
    case ghcb_msr::HV_FT_REQ: return ghcb_msr::HV_FT_RESP;
    default: return 0;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size)
{
    static Rig rig;
    // SEVEMU_FUZZ_VERBOSE=1: one line per request (what a seed exercises).
    static bool const verbose = std::getenv("SEVEMU_FUZZ_VERBOSE") != nullptr;
    Reader in(data, size);

    // The requests first (the input is read once, front to back).
    uint8_t scene = in.u8();
    std::vector<Request> requests;
    while (!in.empty() && int(requests.size()) < kMaxRequests) {
        Request r;
        r.msr = in.u64();
        unsigned k = in.u8() % 17;
        for (unsigned i = 0; i < k; ++i) {
            uint16_t off = in.u16() % kPageSize;
            r.patches.push_back({ off, in.take(in.u8()) });
        }
        r.answer = in.u8();
        requests.push_back(std::move(r));
    }

    // A fresh SEV-ES VM: zeroed RAM, one vCPU, its VMSA encrypted and measured.
    rig.write(rig.ram, Bytes(kRamSize, 0));
    bool init2 = scene & 1;
    Vm vm(*rig.sev, init2 ? KVM_X86_SEV_ES_VM : KVM_X86_DEFAULT_VM);
    if (init2) {
        kvm_sev_init init {};
        init.ghcb_version = (scene & 2) ? 1 : 0;
        FUZZ_CHECK(rig.op(vm, KVM_SEV_INIT2, &init) == 0, "KVM_SEV_INIT2");
    } else {
        FUZZ_CHECK(rig.op<int>(vm, KVM_SEV_ES_INIT, nullptr) == 0, "KVM_SEV_ES_INIT");
    }
    kvm_userspace_memory_region region { 0, 0, 0, kRamSize, direct_map(rig.ram).value };
    FUZZ_CHECK(vm.set_user_memory_region(region) == 0, "memory region");
    auto created = Vcpu::create(vm, 0);
    FUZZ_CHECK(created.has_value(), "KVM_CREATE_VCPU");
    Vcpu& v = **created;
    // A few leaves of an EPYC-Milan KVM guest: vendor, family, XSAVE, the KVM signature with
    // KVM_FEATURE_HC_MAP_GPA_RANGE and KVM_FEATURE_MIGRATION_CONTROL (bits 16, 17), SEV.
    v.set_cpuid({ { 0, 0, 0x10, 0x68747541, 0x444D4163, 0x69746E65 }, { 1, 0, 0x00A00F11, 0x00000800, 0x7ED8320B, 0x178BFBFF },
        { 0xD, 0, 0x7, 0x340, 0x988, 0 }, { 0x40000000, 0, 0x40000001, 0x4B4D564B, 0x564B4D56, 0x4D },
        { 0x40000001, 0, (1u << 16) | (1u << 17), 0, 0, 0 }, { 0x8000001F, 0, 0x0000000B, 0x0000A173, 509, 100 } });
    kvm_sev_launch_start start {};
    start.policy = kPolicyEs;
    FUZZ_CHECK(rig.op(vm, KVM_SEV_LAUNCH_START, &start) == 0, "LAUNCH_START");
    uint32_t fw_error = 0;
    FUZZ_CHECK(rig.op<int>(vm, KVM_SEV_LAUNCH_UPDATE_VMSA, nullptr, &fw_error) == 0, "LAUNCH_UPDATE_VMSA (%u)", fw_error);
    FUZZ_CHECK(v.guest_state_protected(), "the VMSA is not protected after LAUNCH_UPDATE_VMSA");
    Bytes const vmsa = rig.read(v.vmsa_address(), kPageSize);

    // What the request looked like at VMGEXIT, taken by the executor once it wrote it.
    Bytes ram_before, ghcb_before;
    VmState state_before;
    uint64_t page_gpa = 0;
    GuestScript* guest_ptr = nullptr;
    bool page_in_ram = false;
    auto entered = [&] {
        ram_before = rig.read(rig.ram, kRamSize);
        // The vCPU's state as the #VMEXIT leaves it, before the hypervisor acts: the VMCB the CPU
        // wrote (the guest's GHCB MSR, EVENTINJ consumed), not the copy from before the VMRUN.
        state_before = capture(vm, v);
        auto const& c = guest_ptr->written().control;
        state_before.ghcb_msr = c.ghcb_gpa;
        state_before.event_inj = c.event_inj;
        state_before.event_inj_err = c.event_inj_err;
        state_before.int_state = c.int_state;
        state_before.int_ctl = c.int_ctl;
        if (page_in_ram)
            ghcb_before.assign(ram_before.begin() + long(page_gpa), ram_before.begin() + long(page_gpa + kPageSize));
    };
    GuestScript guest(rig, entered);
    guest_ptr = &guest;

    for (auto const& r : requests) {
        uint64_t info = r.msr & ghcb_msr::INFO_MASK;
        page_gpa = r.msr & ~0xFFFull;
        page_in_ram = info == 0 && page_gpa != 0 && page_gpa < kRamSize;
        guest.load(r);

        unsigned vmm_exits = 0;
        bool hypercall = false, ended = false, term = false;
        uint64_t hypercall_ret = 0;
        std::optional<uint32_t> in_value; // a non-string IN's answer
        uint32_t io_in_count = 0;
        while (true) {
            auto e = v.run(guest);
            if (auto const* err = std::get_if<ExitInternalError>(&e); err && err->reason == kBackToGuest && !guest.pending())
                break;
            FUZZ_CHECK(!guest.pending(), "run() returned before the guest's VMGEXIT: exit %zu", e.index());
            FUZZ_CHECK(++vmm_exits <= kMaxExitsPerRequest, "more than %u VMM exits for one request", kMaxExitsPerRequest);
            if (auto const* io = std::get_if<ExitIo>(&e)) {
                FUZZ_CHECK(io->size == 1 || io->size == 2 || io->size == 4, "I/O exit of %u bytes", io->size);
                if (io->in) {
                    uint32_t value = 0x01010101u * r.answer ^ io_in_count++;
                    in_value = value;
                    v.complete_io_in(value);
                }
            } else if (auto const* mmio = std::get_if<ExitMmio>(&e)) {
                FUZZ_CHECK(mmio->size >= 1 && mmio->size <= 8, "MMIO exit of %u bytes", mmio->size);
                if (!mmio->is_write)
                    v.complete_mmio_read(0x0101010101010101ull * r.answer);
            } else if (auto const* hc = std::get_if<ExitHypercall>(&e)) {
                FUZZ_CHECK(hc->nr == KVM_HC_MAP_GPA_RANGE, "hypercall %llu reached the VMM", (unsigned long long)hc->nr);
                hypercall = true;
                hypercall_ret = vmm_map_gpa_range(vm, *hc);
                v.complete_hypercall(hypercall_ret);
            } else if (std::holds_alternative<ExitApResetHold>(e)) {
                // The VMM parks it until a SIPI; the first SIPI of a launched vCPU is only noted.
                for (int i = 0; i < 2 && v.in_ap_reset_hold(); ++i)
                    v.deliver_sipi(0);
                FUZZ_CHECK(!v.in_ap_reset_hold(), "two SIPIs did not release AP reset hold");
            } else if (auto const* t = std::get_if<ExitSevTerm>(&e)) {
                term = ended = true;
                if (info) {
                    FUZZ_CHECK(info == ghcb_msr::TERM_REQ || info == ghcb_msr::REG_GPA_REQ,
                        "MSR protocol request %#llx terminated the guest", (unsigned long long)info);
                    FUZZ_CHECK(t->reason_set == ((r.msr >> 12) & 0xF) && t->reason_code == ((r.msr >> 16) & 0xFF),
                        "termination reason %u/%u, the MSR says %llu/%llu", t->reason_set, t->reason_code,
                        (unsigned long long)((r.msr >> 12) & 0xF), (unsigned long long)((r.msr >> 16) & 0xFF));
                }
                break;
            } else if (auto const* err = std::get_if<ExitInternalError>(&e)) {
                FUZZ_CHECK(!err->reason.empty() && err->reason.find('\n') == std::string::npos,
                    "the VMM's error is not one line: '%s'", err->reason.c_str());
                FUZZ_CHECK(info == 0, "an MSR-protocol request ended in an internal error: %s", err->reason.c_str());
                ended = true;
                break;
            } else {
                FUZZ_CHECK(false, "exit %zu for a VMGEXIT", e.index());
            }
        }

        Bytes ram_after = rig.read(rig.ram, kRamSize);
        FUZZ_CHECK(rig.read(v.vmsa_address(), kPageSize) == vmsa, "the hypervisor wrote the VMSA page");
        VmState state_after = capture(vm, v);
        if (verbose && (info || term || ended || !page_in_ram))
            std::fprintf(stderr, "  MSR %#llx: %s, MSR now %#llx, %u VMM exits\n", (unsigned long long)r.msr,
                term ? "terminated" : ended ? "internal error" : !info && !page_in_ram ? "no GHCB" : "answered",
                (unsigned long long)guest.last_vmcb().control.ghcb_gpa, vmm_exits);
        if (ended && !term)
            break; // KVM_RUN failed: the VMM stops this VM
        if (info) {
            // MSR protocol: no guest memory, no VMM exit but AP reset hold.
            FUZZ_CHECK(ram_after == ram_before, "an MSR-protocol request changed guest memory");
            if (term)
                break;
            uint64_t reply = guest.last_vmcb().control.ghcb_gpa, want = msr_reply_code(info);
            if (want) {
                FUZZ_CHECK((reply & ghcb_msr::INFO_MASK) == want, "MSR request %#llx answered with %#llx",
                    (unsigned long long)info, (unsigned long long)reply);
            } else {
                FUZZ_CHECK(reply == r.msr, "unknown MSR request %#llx: the MSR became %#llx", (unsigned long long)r.msr,
                    (unsigned long long)reply);
                FUZZ_CHECK(state_after == state_before && vmm_exits == 0, "an unknown MSR request changed the VM");
            }
            continue;
        }
        if (!page_in_ram) {
            // No GHCB: straight back to the guest, nothing read or written.
            FUZZ_CHECK(!term && vmm_exits == 0 && ram_after == ram_before && state_after == state_before,
                "a request without a GHCB in RAM (GPA %#llx) did something", (unsigned long long)page_gpa);
            FUZZ_CHECK(guest.last_vmcb().control.ghcb_gpa == r.msr, "the GHCB MSR changed without a GHCB");
            continue;
        }
        // The request as the guest wrote it.
        uint64_t exit_code = u64_at(ghcb_before, offsetof(Ghcb, sw_exit_code));
        uint64_t info1 = u64_at(ghcb_before, offsetof(Ghcb, sw_exit_info_1));
        uint64_t scratch = bit_valid(ghcb_before, offsetof(Ghcb, sw_scratch)) ? u64_at(ghcb_before, offsetof(Ghcb, sw_scratch)) : 0;
        bool scratch_in_ghcb = scratch && (scratch & ~0xFFFull) == page_gpa;
        if (term) {
            FUZZ_CHECK(exit_code == vmgexit::TERM_REQUEST, "NAE %#llx terminated the guest", (unsigned long long)exit_code);
            FUZZ_CHECK(ram_after == ram_before, "a termination request changed guest memory");
            break;
        }
        Bytes ghcb_after(ram_after.begin() + long(page_gpa), ram_after.begin() + long(page_gpa + kPageSize));
        FUZZ_CHECK(bit_valid(ghcb_after, offsetof(Ghcb, sw_exit_info_1)) && bit_valid(ghcb_after, offsetof(Ghcb, sw_exit_info_2)),
            "the reply to NAE %#llx has no valid SW_EXITINFO1/2", (unsigned long long)exit_code);
        uint64_t reply1 = u64_at(ghcb_after, offsetof(Ghcb, sw_exit_info_1));
        uint64_t reply2 = u64_at(ghcb_after, offsetof(Ghcb, sw_exit_info_2));
        FUZZ_CHECK(reply1 <= 2, "SW_EXITINFO1 %#llx in the reply", (unsigned long long)reply1);
        bool refused = reply1 == 2;
        // The valid bitmap of the reply: SW_EXITINFO1/2, and the GPRs unless refused.
        uint8_t want_bitmap[16] {};
        auto mark = [&](size_t off) { want_bitmap[ghcb_valid_bit(off) / 8] |= uint8_t(1u << (ghcb_valid_bit(off) % 8)); };
        mark(offsetof(Ghcb, sw_exit_info_1));
        mark(offsetof(Ghcb, sw_exit_info_2));
        if (!refused)
            for (size_t off : { offsetof(Ghcb, rax), offsetof(Ghcb, rbx), offsetof(Ghcb, rcx), offsetof(Ghcb, rdx) })
                mark(off);
        FUZZ_CHECK(std::memcmp(ghcb_after.data() + offsetof(Ghcb, valid_bitmap), want_bitmap, 16) == 0,
            "the reply's valid bitmap (NAE %#llx, SW_EXITINFO1 %llu)", (unsigned long long)exit_code, (unsigned long long)reply1);
        // No other byte of the GHCB written, the shared buffer only for a scratch area in it.
        for (size_t i = 0; i < kPageSize; ++i) {
            if (ghcb_after[i] == ghcb_before[i])
                continue;
            auto in_field = [&](size_t off, size_t n) { return i >= off && i < off + n; };
            bool ok = in_field(offsetof(Ghcb, valid_bitmap), 16) || in_field(offsetof(Ghcb, sw_exit_info_1), 16)
                || (!refused
                    && (in_field(offsetof(Ghcb, rax), 8) || in_field(offsetof(Ghcb, rcx), 24)))
                || (scratch_in_ghcb && in_field(kGhcbSharedBufferOffset, kGhcbSharedBufferEnd - kGhcbSharedBufferOffset));
            FUZZ_CHECK(ok, "NAE %#llx: the hypervisor wrote byte %#zx of the GHCB", (unsigned long long)exit_code, i);
        }
        // Guest RAM outside the GHCB page: only the scratch area, and nothing for a refusal.
        for (size_t i = 0; i < kRamSize; ++i) {
            if (ram_after[i] == ram_before[i] || (i >= page_gpa && i < page_gpa + kPageSize))
                continue;
            FUZZ_CHECK(!refused && scratch && !scratch_in_ghcb && i >= scratch && i - scratch < kGhcbScratchAreaLimit,
                "NAE %#llx (SW_EXITINFO1 %llu): guest memory at %#zx changed outside the GHCB and the scratch area %#llx",
                (unsigned long long)exit_code, (unsigned long long)reply1, i, (unsigned long long)scratch);
        }
        if (verbose)
            std::fprintf(stderr, "  NAE %#llx info1 %#llx: reply %llu/%#llx after %u VMM exits\n", (unsigned long long)exit_code,
                (unsigned long long)info1, (unsigned long long)reply1, (unsigned long long)reply2, vmm_exits);
        if (refused) {
            FUZZ_CHECK(reply2 >= ghcb_err::NOT_REGISTERED && reply2 <= ghcb_err::INVALID_EVENT,
                "refusal reason %#llx", (unsigned long long)reply2);
            FUZZ_CHECK(vmm_exits == 0, "a refused request (reason %llu) made %u VMM exits", (unsigned long long)reply2, vmm_exits);
            FUZZ_CHECK(state_after == state_before, "a refused request (NAE %#llx, reason %llu) changed the VM's state",
                (unsigned long long)exit_code, (unsigned long long)reply2);
            continue;
        }
        FUZZ_CHECK(hypercall || state_after.shared == state_before.shared, "the shared-regions list changed without a hypercall");
        FUZZ_CHECK((exit_code == vmgexit::AP_JUMP_TABLE && info1 == 0) || state_after.ap_jump_table == state_before.ap_jump_table,
            "the AP jump table changed by NAE %#llx", (unsigned long long)exit_code);
        uint64_t rax = u64_at(ghcb_after, offsetof(Ghcb, rax));
        if (hypercall)
            FUZZ_CHECK(rax == hypercall_ret, "the hypercall's answer %#llx came back as %#llx", (unsigned long long)hypercall_ret,
                (unsigned long long)rax);
        if (in_value && exit_code == exitcode::SVM_EXIT_IOIO && !(info1 & 4) && io_in_count == 1) { // IN, not INS
            unsigned bytes = unsigned((info1 >> 4) & 7);
            uint64_t mask = bytes == 4 ? 0xFFFFFFFFull : (1ull << (8 * bytes)) - 1;
            FUZZ_CHECK((rax & mask) == (*in_value & mask), "IN answered %#x, RAX came back %#llx", *in_value,
                (unsigned long long)rax);
        }
    }
    return 0;
}
