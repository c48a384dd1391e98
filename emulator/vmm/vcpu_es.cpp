// The SEV-ES half of the vCPU: the VMSA, and the GHCB protocol as KVM serves it (Linux
// arch/x86/kvm/svm/sev.c sev_handle_vmgexit, sev_handle_vmgexit_msr_protocol,
// sev_es_validate_vmgexit, setup_vmgexit_scratch, sev_es_sync_from_ghcb / sev_es_sync_to_ghcb,
// sev_vcpu_deliver_sipi_vector; GHCB specification 56421).
//
// The GHCB is the guest's shared page: the hypervisor reads it through its own view of the GPA
// (the memory slots, no key), copies what it needs and never trusts it. Only fields whose bit is
// set in the valid bitmap are read (KVM's kvm_ghcb_get_*_if_valid); the rest count as zero.
// Every malformed request ends in KVM's error reply in the GHCB (SW_EXITINFO1 = 2, SW_EXITINFO2
// = GHCB_ERR_*), a clean exit for the VMM, or KVM's own refusal (ExitInternalError where KVM_RUN
// would fail) — never in a crash.
#include "emulator/vmm/vcpu.h"

#include <cerrno>
#include <climits>
#include <cstring>
#include <fmt/format.h>

namespace sevemu::vmm {

using namespace cpu::svm;

namespace {
constexpr unsigned RAX = 0, RCX = 1, RDX = 2, RBX = 3, RSI = 6;
constexpr uint64_t kIoioType = 1u << 0, kIoioStr = 1u << 2, kIoioSizeMask = 7u << 4; // Linux SVM_IOIO_*
// KVM_HC_* return codes (include/uapi/linux/kvm_para.h).
constexpr uint64_t KVM_EPERM = 1;

// GHCB fields by offset (the struct is packed: no references to its fields).
uint64_t get_u64(Ghcb const& g, size_t off)
{
    uint64_t v;
    std::memcpy(&v, reinterpret_cast<uint8_t const*>(&g) + off, 8);
    return v;
}
// kvm_ghcb_get_*_if_valid: the field if the guest marked it valid, else 0.
uint64_t get_if_valid(Ghcb const& g, uint8_t const (&valid)[16], size_t off)
{
    return ghcb_is_valid(valid, off) ? get_u64(g, off) : 0;
}
// ghcb_set_*: the value, and its bit in the valid bitmap.
void set_valid(Ghcb& g, size_t off, uint64_t value)
{
    std::memcpy(reinterpret_cast<uint8_t*>(&g) + off, &value, 8);
    unsigned bit = ghcb_valid_bit(off);
    g.valid_bitmap[bit / 8] |= uint8_t(1u << (bit % 8));
}
#define GHCB_OFF(f) offsetof(Ghcb, f)
} // namespace

// ---------------------------------------------------------------------------------------------
// Guest memory through the memory slots, as the hypervisor sees it (kvm_read_guest /
// kvm_write_guest): no key, page by page; false if any byte is outside every slot.
bool Vcpu::guest_read(uint64_t gpa, std::span<uint8_t> out) const
{
    auto& mc = m_vm.host().memory();
    for (size_t done = 0; done < out.size();) {
        uint64_t at = gpa + done;
        size_t n = std::min<size_t>(out.size() - done, kPageSize - (at & kPageMask));
        auto spa = m_vm.gpa_to_spa(Gpa(at));
        if (!spa || !mc.read(*spa, out.subspan(done, n), mmu::KeyId::none()))
            return false;
        done += n;
    }
    return true;
}

bool Vcpu::guest_write(uint64_t gpa, std::span<uint8_t const> in)
{
    auto& mc = m_vm.host().memory();
    for (size_t done = 0; done < in.size();) {
        uint64_t at = gpa + done;
        size_t n = std::min<size_t>(in.size() - done, kPageSize - (at & kPageMask));
        auto spa = m_vm.gpa_to_spa(Gpa(at));
        if (!spa || !mc.write(*spa, in.subspan(done, n), mmu::KeyId::none()))
            return false;
        done += n;
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// sev_es_init_vmcb(): the SEV-ES enable bit, LBR virtualization (which VMRUN requires for SEV-ES,
// APM vol 2 §15.35.2), the VMSA pointer, and the intercepts that make sense when the hypervisor
// cannot see or change the guest's registers.
void Vcpu::sev_es_init_vmcb()
{
    auto& c = m_vmcb.control;
    c.nested_ctl |= nested_ctl::SEV_ES_ENABLE;
    c.virt_ext |= virt_ext::LBR_CTL_ENABLE;
    c.vmsa_pa = m_vmsa_page.value; // no C-bit: the CPU uses the guest's key for it anyway
    auto clear = [&](Intercept i) { c.intercepts[unsigned(i) / 32] &= ~(1u << (unsigned(i) % 32)); };
    auto set = [&](Intercept i) { c.intercepts[unsigned(i) / 32] |= 1u << (unsigned(i) % 32); };
    // "Can't intercept CR register access, HV can't modify CR registers".
    for (Intercept i : { Intercept::CR0_READ, Intercept::CR4_READ, Intercept::CR8_READ, Intercept::CR0_WRITE,
             Intercept::CR4_WRITE, Intercept::CR8_WRITE, Intercept::SELECTIVE_CR0, Intercept::XSETBV })
        clear(i);
    // "Track EFER/CR register changes": the trap intercepts (exits after the write, RIP advanced).
    c.intercepts[unsigned(Intercept::TRAP_EFER_WRITE) / 32] |= 1u << (unsigned(Intercept::TRAP_EFER_WRITE) % 32);
    for (unsigned cr : { 0u, 4u, 8u }) {
        unsigned bit = unsigned(Intercept::TRAP_CR0_WRITE) + cr;
        c.intercepts[bit / 32] |= 1u << (bit % 32);
    }
    // Without DebugSwap the guest's DR7 accesses are intercepted (#VC 0x27/0x37), so that it
    // cannot arm breakpoints the host does not save and restore (sev_es_init_vmcb).
    if (!(m_vm.sev().vmsa_features & SVM_SEV_FEAT_DEBUG_SWAP)) {
        set(Intercept::DR7_READ);
        set(Intercept::DR7_WRITE);
    }
    // sev_init_vmcb() also drops the #UD intercept; sevemu's VMCB never had it.
    // sev_es_vcpu_reset(): the GHCB MSR holds the SEV_INFO response at RESET.
    c.ghcb_gpa = ghcb_msr::sev_info(m_vm.sev().ghcb_version, 1, m_vm.host().config().sev_enc_bit);
    // The VMM's staging state: SEV_FEATURES and the FPU rule of sev_es_sync_vmsa.
    m_vmsa_extras.sev_features = m_vm.sev().vmsa_features;
    m_vmsa_extras.fpu_state = m_vm.type() != KVM_X86_DEFAULT_VM;
}

Vmsa Vcpu::vmsa_image() const { return sev_es_sync_vmsa(m_vmcb.save, m_gprs, m_vmsa_extras); }

int Vcpu::sync_vmsa()
{
    if (!m_es)
        return -EINVAL;
    // A VMSA is encrypted once (sev_es_sync_vmsa: guest_state_protected), and not with debug
    // state the host would have to swap (DR7 beyond DR7_FIXED_1).
    if (m_guest_state_protected || (m_vmcb.save.dr7 & ~kDr7Fixed1))
        return -EINVAL;
    Vmsa v = vmsa_image();
    if (!m_vm.host().memory().write(m_vmsa_page, { reinterpret_cast<uint8_t const*>(&v), sizeof v }, mmu::KeyId::none()))
        return -EFAULT;
    return 0;
}

int Vcpu::get_registers(VmcbSaveArea& save, GuestGprs& gprs) const
{
    if (m_guest_state_protected)
        return -EINVAL;
    save = m_vmcb.save;
    gprs = m_gprs;
    return 0;
}

int Vcpu::set_registers(VmcbSaveArea const& save, GuestGprs const& gprs)
{
    if (m_guest_state_protected)
        return -EINVAL;
    m_vmcb.save = save;
    m_gprs = gprs;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// The exits of an SEV-ES guest (svm_invoke_exit_handler for the automatic exits, APM vol 2
// §15.35.5). Everything else became #VC in the guest; the save area in the VMCB is not the
// guest's and is never used.
std::optional<VcpuExit> Vcpu::handle_exit_es(Vmcb& vmcb)
{
    auto& c = vmcb.control;
    switch (c.exit_code) {
    case exitcode::SVM_EXIT_VMGEXIT:
        return handle_vmgexit(vmcb);
    case exitcode::SVM_EXIT_HLT:
        return ExitHlt {}; // RIP is already past the HLT (the CPU advances it for SEV-ES)
    case exitcode::SVM_EXIT_PAUSE:
    case exitcode::SVM_EXIT_NMI:
        return std::nullopt;
    case exitcode::SVM_EXIT_INTR:
        return ExitIntr {};
    case exitcode::SVM_EXIT_VINTR:
        c.int_ctl &= ~(int_ctl::V_IRQ | int_ctl::V_IGN_TPR | int_ctl::V_INTR_PRIO_MASK);
        c.intercepts[unsigned(Intercept::VINTR) / 32] &= ~(1u << (unsigned(Intercept::VINTR) % 32));
        m_irq_window = false;
        return ExitIrqWindowOpen {};
    case exitcode::SVM_EXIT_SHUTDOWN:
        return ExitShutdown {};
    case exitcode::SVM_EXIT_EFER_WRITE_TRAP:
    case exitcode::SVM_EXIT_CR0_WRITE_TRAP:
    case exitcode::SVM_EXIT_CR0_WRITE_TRAP + 4:
    case exitcode::SVM_EXIT_CR0_WRITE_TRAP + 8:
        // efer_trap / cr_trap: KVM updates its shadow of the register; this layer keeps none
        // (the guest's paging is its own business under nested paging).
        return std::nullopt;
    case exitcode::SVM_EXIT_NPF: {
        uint64_t gpa = c.exit_info_2;
        if (m_vm.gpa_to_spa(Gpa(gpa)))
            return ExitInternalError { fmt::format("nested page fault at GPA {:#x} (error {:#x}) inside a memory slot",
                gpa, uint64_t(c.exit_info_1)) };
        // MMIO (KVM's MMIO caching, which SEV-ES requires: sev_hardware_setup): the hypervisor
        // cannot read the guest's instruction, so it maps the page with a reserved bit set; the
        // guest's access then takes #NPF(RSVD), which the CPU turns into #VC 0x400, and the
        // guest asks for the access itself through the GHCB (MMIO_READ/MMIO_WRITE).
        if (!m_npt->map_mmio(Gpa(gpa)))
            return ExitInternalError { fmt::format("MMIO at GPA {:#x} cannot be mapped for #VC", gpa) };
        request_tlb_flush();
        return std::nullopt;
    }
    case exitcode::VMEXIT_INVALID:
        return ExitFailEntry { uint64_t(c.exit_code) };
    default:
        return ExitInternalError { fmt::format("unexpected #VMEXIT {:#x} of an SEV-ES guest (EXITINFO1 {:#x}, EXITINFO2 {:#x})",
            uint64_t(c.exit_code), uint64_t(c.exit_info_1), uint64_t(c.exit_info_2)) };
    }
}

// sev_handle_vmgexit(): the MSR protocol when GHCBInfo is not zero, else the GHCB page.
std::optional<VcpuExit> Vcpu::handle_vmgexit(Vmcb& vmcb)
{
    uint64_t ghcb_gpa = vmcb.control.ghcb_gpa;
    if (ghcb_gpa & ghcb_msr::INFO_MASK)
        return handle_ghcb_msr_protocol(vmcb);
    // "Without a GHCB, just return right back to the guest" (none set, or not in guest memory).
    if (!ghcb_gpa)
        return std::nullopt;
    Ghcb page; // every byte read below, or the request is dropped
    if (!guest_read(ghcb_gpa, { reinterpret_cast<uint8_t*>(&page), sizeof page }))
        return std::nullopt;
    // Built in place from the page (no zeroed MappedGhcb to copy it into: two 4 KiB passes less
    // at every #VC round trip), through a constructor: clang 14 (the fuzz build) has no
    // parenthesized aggregate initialization.
    m_ghcb.emplace(ghcb_gpa, page);
    return handle_ghcb_nae(vmcb);
}

std::optional<VcpuExit> Vcpu::handle_ghcb_msr_protocol(Vmcb& vmcb)
{
    uint64_t msr = vmcb.control.ghcb_gpa;
    struct WriteBack {
        Vmcb& vmcb;
        uint64_t& msr;
        ~WriteBack() { vmcb.control.ghcb_gpa = msr; }
    } write_back { vmcb, msr };
    auto set_bits = [&](uint64_t value, uint64_t mask, unsigned pos) { msr = (msr & ~(mask << pos)) | ((value & mask) << pos); };
    auto terminate = [&]() -> VcpuExit {
        return ExitSevTerm { msr, uint8_t((msr >> 12) & 0xF), uint8_t((msr >> 16) & 0xFF) };
    };
    switch (msr & ghcb_msr::INFO_MASK) {
    case ghcb_msr::SEV_INFO_REQ:
        msr = ghcb_msr::sev_info(m_vm.sev().ghcb_version, 1, m_vm.host().config().sev_enc_bit);
        return std::nullopt;
    case ghcb_msr::CPUID_REQ: {
        // [63:32] function (subleaf 0), [31:30] register; the answer replaces [63:32].
        CpuidEntry e = cpuid_lookup(uint32_t(msr >> 32), 0);
        uint32_t reg = uint32_t(msr >> 30) & 3;
        uint32_t value = reg == 0 ? e.eax : reg == 1 ? e.ebx : reg == 2 ? e.ecx : e.edx;
        set_bits(value, 0xFFFFFFFF, 32);
        set_bits(ghcb_msr::CPUID_RESP, ghcb_msr::INFO_MASK, 0);
        return std::nullopt;
    }
    case ghcb_msr::AP_RESET_HOLD_REQ:
        // kvm_emulate_ap_reset_hold; the result is "not released" (0) until a SIPI sets it.
        m_ap_reset_hold = ApResetHold::MsrProtocol;
        set_bits(0, (1ull << 52) - 1, 12);
        set_bits(ghcb_msr::AP_RESET_HOLD_RESP, ghcb_msr::INFO_MASK, 0);
        return ExitApResetHold {};
    case ghcb_msr::HV_FT_REQ:
        // GHCB_HV_FT_SUPPORTED: the SNP features only for SNP guests; none for SEV-ES.
        set_bits(0, (1ull << 52) - 1, 12);
        set_bits(ghcb_msr::HV_FT_RESP, ghcb_msr::INFO_MASK, 0);
        return std::nullopt;
    case ghcb_msr::REG_GPA_REQ:
        // GHCB GPA registration is an SNP request: KVM terminates a non-SNP guest that makes it
        // (sev_handle_vmgexit_msr_protocol: "if (!sev_snp_guest(vcpu->kvm)) goto out_terminate").
        return terminate();
    case ghcb_msr::TERM_REQ:
        return terminate();
    default:
        return std::nullopt; // "Error, keep GHCB MSR value as-is"
    }
}

// sev_es_validate_vmgexit() then the handlers of sev_handle_vmgexit().
std::optional<VcpuExit> Vcpu::handle_ghcb_nae(Vmcb& vmcb)
{
    auto& mg = *m_ghcb;
    Ghcb& g = mg.page;
    auto& c = vmcb.control;
    // sev_es_sync_from_ghcb(): copy the valid bitmap, take what the guest marked valid, clear
    // the bitmap for the reply.
    uint8_t valid[16];
    std::memcpy(valid, g.valid_bitmap, sizeof valid);
    mg.regs = {};
    mg.regs[RAX] = get_if_valid(g, valid, GHCB_OFF(rax));
    mg.regs[RBX] = get_if_valid(g, valid, GHCB_OFF(rbx));
    mg.regs[RCX] = get_if_valid(g, valid, GHCB_OFF(rcx));
    mg.regs[RDX] = get_if_valid(g, valid, GHCB_OFF(rdx));
    mg.regs[RSI] = get_if_valid(g, valid, GHCB_OFF(rsi));
    uint8_t cpl = get_if_valid(g, valid, GHCB_OFF(cpl));
    if (ghcb_is_valid(valid, GHCB_OFF(xcr0)))
        m_vmsa_extras.xcr0 = g.xcr0; // vcpu->arch.xcr0, for CPUID leaf 0xD
    uint64_t exit_code = g.sw_exit_code, info1 = g.sw_exit_info_1, info2 = g.sw_exit_info_2;
    mg.scratch_gpa = get_if_valid(g, valid, GHCB_OFF(sw_scratch));
    std::memset(g.valid_bitmap, 0, sizeof g.valid_bitmap);

    auto reply_error = [&](uint64_t reason) -> std::optional<VcpuExit> {
        set_valid(g, GHCB_OFF(sw_exit_info_1), uint64_t(2));
        set_valid(g, GHCB_OFF(sw_exit_info_2), reason);
        mg.regs_out = false; // a refusal returns no registers, also from a handler (fuzz_ghcb)
        return std::nullopt; // "Resume the guest to 'return' the error code"
    };
    auto v = [&](size_t off) { return ghcb_is_valid(valid, off); };

    // Validation, in KVM's order.
    if (g.ghcb_usage)
        return reply_error(ghcb_err::INVALID_USAGE);
    if (!v(GHCB_OFF(sw_exit_code)) || !v(GHCB_OFF(sw_exit_info_1)) || !v(GHCB_OFF(sw_exit_info_2)))
        return reply_error(ghcb_err::MISSING_INPUT);
    bool inputs_ok = true;
    switch (exit_code) {
    case exitcode::SVM_EXIT_READ_DR0 + 7:
    case exitcode::SVM_EXIT_RDTSC:
    case exitcode::SVM_EXIT_INVD:
    case exitcode::SVM_EXIT_RDTSCP:
    case exitcode::SVM_EXIT_WBINVD:
    case vmgexit::NMI_COMPLETE:
    case vmgexit::AP_HLT_LOOP:
    case vmgexit::AP_JUMP_TABLE:
    case vmgexit::UNSUPPORTED_EVENT:
    case vmgexit::HV_FEATURES:
    case vmgexit::TERM_REQUEST:
        break;
    case exitcode::SVM_EXIT_WRITE_DR0 + 7:
        inputs_ok = v(GHCB_OFF(rax));
        break;
    case exitcode::SVM_EXIT_RDPMC:
        inputs_ok = v(GHCB_OFF(rcx));
        break;
    case exitcode::SVM_EXIT_CPUID:
        inputs_ok = v(GHCB_OFF(rax)) && v(GHCB_OFF(rcx)) && (mg.regs[RAX] != 0xD || v(GHCB_OFF(xcr0)));
        break;
    case exitcode::SVM_EXIT_IOIO:
        inputs_ok = (info1 & kIoioStr) ? v(GHCB_OFF(sw_scratch)) : ((info1 & kIoioType) || v(GHCB_OFF(rax)));
        break;
    case exitcode::SVM_EXIT_MSR:
        inputs_ok = v(GHCB_OFF(rcx)) && (!info1 || (v(GHCB_OFF(rax)) && v(GHCB_OFF(rdx))));
        break;
    case exitcode::SVM_EXIT_VMMCALL:
        inputs_ok = v(GHCB_OFF(rax)) && v(GHCB_OFF(cpl));
        break;
    case exitcode::SVM_EXIT_MONITOR:
        inputs_ok = v(GHCB_OFF(rax)) && v(GHCB_OFF(rcx)) && v(GHCB_OFF(rdx));
        break;
    case exitcode::SVM_EXIT_MWAIT:
        inputs_ok = v(GHCB_OFF(rax)) && v(GHCB_OFF(rcx));
        break;
    case vmgexit::MMIO_READ:
    case vmgexit::MMIO_WRITE:
        inputs_ok = v(GHCB_OFF(sw_scratch));
        break;
    default:
        return reply_error(ghcb_err::INVALID_EVENT);
    }
    if (!inputs_ok)
        return reply_error(ghcb_err::MISSING_INPUT);

    set_valid(g, GHCB_OFF(sw_exit_info_1), uint64_t(0));
    set_valid(g, GHCB_OFF(sw_exit_info_2), uint64_t(0));
    mg.regs_out = true;

    switch (exit_code) {
    case vmgexit::MMIO_READ:
    case vmgexit::MMIO_WRITE: {
        bool read = exit_code == vmgexit::MMIO_READ;
        if (auto sc = setup_scratch(info2, read); !sc.ok)
            return sc.exit;
        if (info2 == 0)
            return std::nullopt;
        m_es_pending = EsPending { read ? EsPending::Kind::MmioRead : EsPending::Kind::MmioWrite };
        m_es_pending->gpa = info1;
        m_es_pending->total = uint32_t(info2);
        return next_es_pending_exit();
    }
    case exitcode::SVM_EXIT_IOIO: {
        unsigned size = unsigned((info1 & kIoioSizeMask) >> 4);
        if (size != 1 && size != 2 && size != 4)
            return reply_error(ghcb_err::INVALID_INPUT); // KVM passes it on unchecked (QUIRKS.md)
        uint16_t port = uint16_t(info1 >> 16);
        bool in = info1 & kIoioType;
        if (info1 & kIoioStr) {
            // sev_es_string_io(): SW_EXITINFO2 elements of `size` bytes in the scratch area.
            if (info2 > uint64_t(INT_MAX))
                return ExitInternalError { fmt::format("GHCB string I/O with {} elements (KVM_RUN: -EINVAL)", info2) };
            uint64_t bytes = info2 * size;
            if (bytes > uint64_t(INT_MAX))
                return ExitInternalError { fmt::format("GHCB string I/O of {} bytes (KVM_RUN: -EINVAL)", bytes) };
            if (auto sc = setup_scratch(bytes, in); !sc.ok)
                return sc.exit;
            if (info2 == 0)
                return std::nullopt;
            m_es_pending = EsPending { EsPending::Kind::StringIo };
            m_es_pending->port = port;
            m_es_pending->size = uint8_t(size);
            m_es_pending->in = in;
            m_es_pending->total = uint32_t(info2);
            return next_es_pending_exit();
        }
        ExitIo io { port, uint8_t(size), in, 0 };
        if (in) {
            m_es_pending = EsPending { EsPending::Kind::IoIn };
            m_es_pending->size = uint8_t(size);
            m_es_pending->awaiting = true;
        } else {
            io.value = uint32_t(mg.regs[RAX] & (size == 4 ? 0xFFFFFFFFull : (1ull << (8 * size)) - 1));
        }
        return io;
    }
    case exitcode::SVM_EXIT_CPUID: {
        CpuidEntry e = cpuid_lookup(uint32_t(mg.regs[RAX]), uint32_t(mg.regs[RCX]));
        mg.regs[RAX] = e.eax;
        mg.regs[RBX] = e.ebx;
        mg.regs[RCX] = e.ecx;
        mg.regs[RDX] = e.edx;
        return std::nullopt;
    }
    case exitcode::SVM_EXIT_MSR: {
        bool write = info1 != 0;
        uint64_t value = write ? (uint32_t(mg.regs[RAX]) | (mg.regs[RDX] << 32)) : 0;
        if (!emulate_msr(uint32_t(mg.regs[RCX]), write, value)) {
            // svm_complete_emulated_msr(): an SEV-ES guest's #GP comes back in the GHCB
            // (SW_EXITINFO1 = 1, SW_EXITINFO2 = the event to raise), not through EVENTINJ.
            set_valid(g, GHCB_OFF(sw_exit_info_1), uint64_t(1));
            set_valid(g, GHCB_OFF(sw_exit_info_2), uint64_t(encode_event(Event { 13, EventType::EXCEPTION, 0u }) & ~evtinj::VALID_ERR));
            return std::nullopt;
        }
        if (!write) {
            mg.regs[RAX] = uint32_t(value);
            mg.regs[RDX] = value >> 32;
        }
        return std::nullopt;
    }
    case exitcode::SVM_EXIT_RDTSC:
    case exitcode::SVM_EXIT_RDTSCP: {
        if (!m_executor)
            return ExitInternalError { "GHCB RDTSC outside run()" };
        auto tsc = m_executor->host_tsc();
        if (!tsc)
            return ExitInternalError { "GHCB RDTSC: the executor has no TSC" };
        uint64_t t = *tsc + c.tsc_offset;
        mg.regs[RAX] = uint32_t(t);
        mg.regs[RDX] = t >> 32;
        if (exit_code == exitcode::SVM_EXIT_RDTSCP)
            mg.regs[RCX] = 0; // the guest's TSC_AUX is in its VMSA, out of the hypervisor's reach
        return std::nullopt;
    }
    case exitcode::SVM_EXIT_VMMCALL: {
        // kvm_emulate_hypercall(): CPL from the GHCB; a 64-bit hypercall (the state is protected).
        uint64_t nr = mg.regs[RAX];
        if (cpl != 0) {
            mg.regs[RAX] = uint64_t(-int64_t(KVM_EPERM));
            return std::nullopt;
        }
        if (nr == KVM_HC_MAP_GPA_RANGE) {
            uint64_t gpa = mg.regs[RBX], npages = mg.regs[RCX];
            uint64_t gfn = gpa >> kPageShift;
            if ((gpa & kPageMask) || npages == 0 || gfn + npages <= gfn) {
                mg.regs[RAX] = uint64_t(-int64_t(KVM_EINVAL));
                return std::nullopt;
            }
            m_es_pending = EsPending { EsPending::Kind::Hypercall };
            return ExitHypercall { nr, { gpa, npages, mg.regs[RDX] } };
        }
        mg.regs[RAX] = uint64_t(-int64_t(KVM_ENOSYS));
        return std::nullopt;
    }
    case exitcode::SVM_EXIT_READ_DR0 + 7:
    case exitcode::SVM_EXIT_WRITE_DR0 + 7:
        // dr_interception(): "SEV-ES intercepts DR7 only to disable guest debugging": nothing to do.
        return std::nullopt;
    case exitcode::SVM_EXIT_INVD:
    case exitcode::SVM_EXIT_WBINVD:
        return std::nullopt; // kvm_emulate_wbinvd without non-coherent DMA: nothing to flush
    case exitcode::SVM_EXIT_RDPMC:
        inject_exception(vmcb, 13, 0u); // no virtual PMU: kvm_emulate_rdpmc's #GP
        return std::nullopt;
    case exitcode::SVM_EXIT_MONITOR:
    case exitcode::SVM_EXIT_MWAIT:
        inject_exception(vmcb, 6, std::nullopt); // not in the guest's CPUID: #UD (kvm_handle_invalid_op)
        return std::nullopt;
    case vmgexit::NMI_COMPLETE:
        // iret_interception() for SEV-ES: NMIs are unmasked at the next exit.
        if (m_nmi_masked)
            m_nmi_iret_rip = 0;
        return std::nullopt;
    case vmgexit::AP_HLT_LOOP:
        m_ap_reset_hold = ApResetHold::Nae;
        return ExitApResetHold {};
    case vmgexit::AP_JUMP_TABLE:
        if (info1 == 0)
            m_vm.set_ap_jump_table(info2);
        else if (info1 == 1)
            set_valid(g, GHCB_OFF(sw_exit_info_2), m_vm.ap_jump_table());
        else
            return reply_error(ghcb_err::INVALID_INPUT);
        return std::nullopt;
    case vmgexit::HV_FEATURES:
        set_valid(g, GHCB_OFF(sw_exit_info_2), uint64_t(0)); // GHCB_HV_FT_SUPPORTED: none without SNP
        return std::nullopt;
    case vmgexit::TERM_REQUEST:
        return ExitSevTerm { mg.gpa, uint8_t(info1 & 0xF), uint8_t((info1 >> 4) & 0xFF) };
    case vmgexit::UNSUPPORTED_EVENT:
        return ExitInternalError { fmt::format("the SEV-ES guest reported an unsupported #VC event "
                                               "(exit_info_1 {:#x}, exit_info_2 {:#x}; KVM_RUN: -EINVAL)",
            info1, info2) };
    default:
        return ExitInternalError { fmt::format("GHCB exit code {:#x} passed validation without a handler", exit_code) };
    }
}

// setup_vmgexit_scratch(): the scratch area is either inside the GHCB's shared buffer, or
// elsewhere in guest memory and at most 16 pages; anything else is the guest's error.
Vcpu::ScratchOutcome Vcpu::setup_scratch(uint64_t len, bool sync)
{
    auto& mg = *m_ghcb;
    Ghcb& g = mg.page;
    auto bad = [&]() -> ScratchOutcome {
        set_valid(g, GHCB_OFF(sw_exit_info_1), uint64_t(2));
        set_valid(g, GHCB_OFF(sw_exit_info_2), ghcb_err::INVALID_SCRATCH_AREA);
        mg.regs_out = false; // a refusal, like reply_error's: no registers go back (fuzz_ghcb)
        return { false, std::nullopt }; // the guest gets the error reply; no exit for the VMM
    };
    uint64_t beg = mg.scratch_gpa;
    if (!beg)
        return bad();
    uint64_t end = beg + len;
    if (end < beg)
        return bad();
    mg.scratch.clear();
    if ((beg & ~kPageMask) == mg.gpa) {
        // Inside the GHCB: entirely within the shared buffer.
        if (beg < mg.gpa + kGhcbSharedBufferOffset || end > mg.gpa + kGhcbSharedBufferEnd)
            return bad();
        mg.scratch_in_ghcb = true;
        mg.scratch_offset = size_t(beg - mg.gpa);
        auto const* p = reinterpret_cast<uint8_t const*>(&g) + mg.scratch_offset;
        mg.scratch.assign(p, p + len);
    } else {
        if (len > kGhcbScratchAreaLimit)
            return bad();
        mg.scratch.resize(len);
        if (!guest_read(beg, mg.scratch)) {
            m_ghcb.reset();
            return { false, ExitInternalError { fmt::format("GHCB scratch area at GPA {:#x} ({} bytes) is not guest memory "
                                                            "(kvm_read_guest failed; KVM_RUN: -EFAULT)",
                                beg, len) } };
        }
        mg.scratch_in_ghcb = false;
    }
    mg.scratch_sync = sync;
    return { true, std::nullopt };
}

// The next exit of a multi-part GHCB request (string I/O elements, MMIO fragments of 8 bytes),
// or nullopt when it is done.
std::optional<VcpuExit> Vcpu::next_es_pending_exit()
{
    if (!m_es_pending || !m_ghcb) {
        m_es_pending.reset();
        return std::nullopt;
    }
    auto& p = *m_es_pending;
    auto& sa = m_ghcb->scratch;
    switch (p.kind) {
    case EsPending::Kind::StringIo: {
        if (p.done >= p.total) {
            m_es_pending.reset();
            return std::nullopt;
        }
        ExitIo io { p.port, p.size, p.in, 0 };
        if (p.in) {
            p.awaiting = true;
        } else {
            uint32_t value = 0;
            std::memcpy(&value, sa.data() + size_t(p.done) * p.size, p.size);
            io.value = value;
            ++p.done;
        }
        return io;
    }
    case EsPending::Kind::MmioRead:
    case EsPending::Kind::MmioWrite: {
        if (p.done >= p.total) {
            m_es_pending.reset();
            return std::nullopt;
        }
        uint8_t n = uint8_t(std::min<uint32_t>(8, p.total - p.done));
        ExitMmio mmio { p.gpa + p.done, n, p.kind == EsPending::Kind::MmioWrite, 0 };
        if (mmio.is_write) {
            std::memcpy(&mmio.data, sa.data() + p.done, n);
            p.done += n;
        } else {
            p.size = n;
            p.awaiting = true;
        }
        return mmio;
    }
    default:
        m_es_pending.reset();
        return std::nullopt;
    }
}

// sev_es_unmap_ghcb(), before the next VMRUN: the scratch area back to guest memory when the
// request filled it (or into the GHCB's shared buffer), the GPRs the protocol returns (RAX,
// RBX, RCX, RDX, marked valid: sev_es_sync_to_ghcb), and the page back to the guest.
void Vcpu::unmap_ghcb()
{
    if (!m_ghcb)
        return;
    auto& mg = *m_ghcb;
    Ghcb& g = mg.page;
    if (!mg.scratch.empty()) {
        if (mg.scratch_in_ghcb)
            std::memcpy(reinterpret_cast<uint8_t*>(&g) + mg.scratch_offset, mg.scratch.data(), mg.scratch.size());
        else if (mg.scratch_sync)
            (void)guest_write(mg.scratch_gpa, mg.scratch); // the guest unmapped it: its loss, as kvm_write_guest
    }
    if (mg.regs_out) {
        set_valid(g, GHCB_OFF(rax), mg.regs[RAX]);
        set_valid(g, GHCB_OFF(rbx), mg.regs[RBX]);
        set_valid(g, GHCB_OFF(rcx), mg.regs[RCX]);
        set_valid(g, GHCB_OFF(rdx), mg.regs[RDX]);
    }
    (void)guest_write(mg.gpa, { reinterpret_cast<uint8_t const*>(&g), sizeof g });
    m_ghcb.reset();
}

// The VMM's answers to a GHCB request's exits.
bool Vcpu::complete_es_io_in(uint32_t value)
{
    if (!m_es_pending || !m_ghcb || !m_es_pending->awaiting)
        return false;
    auto& p = *m_es_pending;
    if (p.kind == EsPending::Kind::IoIn) {
        // complete_fast_pio_in(): the low `size` bytes of RAX.
        uint64_t mask = p.size == 4 ? 0xFFFFFFFFull : (1ull << (8 * p.size)) - 1;
        uint64_t& rax = m_ghcb->regs[RAX];
        rax = p.size == 4 ? value : ((rax & ~mask) | (value & mask));
        m_es_pending.reset();
        return true;
    }
    if (p.kind == EsPending::Kind::StringIo) {
        std::memcpy(m_ghcb->scratch.data() + size_t(p.done) * p.size, &value, p.size);
        ++p.done;
        p.awaiting = false;
        return true;
    }
    return false;
}

bool Vcpu::complete_es_mmio_read(uint64_t value)
{
    if (!m_es_pending || !m_ghcb || !m_es_pending->awaiting || m_es_pending->kind != EsPending::Kind::MmioRead)
        return false;
    auto& p = *m_es_pending;
    std::memcpy(m_ghcb->scratch.data() + p.done, &value, p.size);
    p.done += p.size;
    p.awaiting = false;
    return true;
}

bool Vcpu::complete_es_hypercall(uint64_t ret)
{
    if (!m_es_pending || !m_ghcb || m_es_pending->kind != EsPending::Kind::Hypercall)
        return false;
    m_ghcb->regs[RAX] = ret;
    m_es_pending.reset();
    return true;
}

// sev_vcpu_deliver_sipi_vector().
void Vcpu::deliver_sipi_es()
{
    if (!m_received_first_sipi) {
        // "First SIPI: Use the values as initially set by the VMM" (the launched VMSA).
        m_received_first_sipi = true;
        return;
    }
    if (m_ap_reset_hold == ApResetHold::Nae) {
        // "Return from an AP Reset Hold VMGEXIT ... Set SW_EXIT_INFO_2 to a non-zero value."
        if (!m_ghcb)
            return;
        set_valid(m_ghcb->page, GHCB_OFF(sw_exit_info_2), uint64_t(1));
    } else if (m_ap_reset_hold == ApResetHold::MsrProtocol) {
        m_vmcb.control.ghcb_gpa = (1ull << 12) | ghcb_msr::AP_RESET_HOLD_RESP; // result (GHCBData) non-zero
    } else {
        return;
    }
    m_ap_reset_hold = ApResetHold::None;
}

} // namespace sevemu::vmm
