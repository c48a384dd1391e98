// The SEV runtime of a Machine: QEMU's sev.c launch sequence over the KVM-like layer.
#include "emulator/sev_runtime.h"

#include "cpu/cpu_model.h"
#include "devices/amd_sp.h"
#include "emulator/vmm/host_memory.h"
#include "emulator/vmm/psp_driver.h"
#include "emulator/vmm/vcpu.h"
#include "emulator/vmm/vm.h"
#include "firmware/firmware.h"
#include "firmware/platform_store.h"
#include "firmware/sev_cert.h"
#include "firmware/sev_status.h"
#include "mmu/memory_controller.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <iterator>

namespace sevemu::emulator {

using namespace sevemu::vmm;
namespace fw = sevemu::firmware;

namespace {

Unexpected<MachineError> fail(std::string msg) { return Unexpected<MachineError>(MachineError { std::move(msg) }); }
Unexpected<SevError> sev_fail(std::string msg) { return Unexpected<SevError>(SevError { std::move(msg) }); }

// "ret=-5 fw_error=7 'POLICY_FAILURE'", the way QEMU reports a failed KVM_MEMORY_ENCRYPT_OP.
std::string op_error(int ret, uint32_t fw_error)
{
    return fmt::format("ret={} fw_error={} '{}'", ret, fw_error,
        fw_error ? std::string(fw::status_name(uint16_t(fw_error))) : std::string(std::strerror(ret < 0 ? -ret : ret)));
}

constexpr uint64_t kPolicyEs = fw::policy::ES;

// Memory the VMM hands to the KVM-like API: what a userspace buffer is on a real host. Pages of
// host memory, addressed by their direct-map Hva, freed on destruction.
class HostBuffer {
public:
    static Result<HostBuffer, int> create(HostMemory& host, std::span<uint8_t const> bytes, size_t size = 0)
    {
        size = std::max({ size, bytes.size(), size_t(1) });
        uint64_t pages = (size + kPageSize - 1) / kPageSize;
        Spa spa = TRY(host.alloc_pages(pages));
        HostBuffer b(host, spa, pages);
        if (!bytes.empty())
            TRY(host.copy_to(direct_map(spa), bytes));
        return b;
    }
    HostBuffer(HostBuffer&& o) noexcept : m_host(o.m_host), m_spa(o.m_spa), m_pages(o.m_pages) { o.m_pages = 0; }
    HostBuffer& operator=(HostBuffer&&) = delete;
    ~HostBuffer()
    {
        if (m_pages)
            m_host->free_pages(m_spa, m_pages);
    }
    Hva hva() const { return direct_map(m_spa); }
    Result<Bytes, int> read(size_t n) const
    {
        Bytes out(n);
        TRY(m_host->copy_from(hva(), out));
        return out;
    }

private:
    HostBuffer(HostMemory& host, Spa spa, uint64_t pages) : m_host(&host), m_spa(spa), m_pages(pages) {}
    HostMemory* m_host;
    Spa m_spa;
    uint64_t m_pages;
};

// QEMU reads dh-cert-file and session-file with g_file_get_contents() and g_base64_decode().
Result<Bytes, MachineError> read_base64_file(std::string const& what, std::string const& path)
{
    auto raw = read_regular_file(path, file_limits::kBase64Blob);
    if (!raw)
        return fail(fmt::format("{} {}", what, raw.error().message));
    std::string_view text(reinterpret_cast<char const*>(raw->data()), raw->size());
    auto bytes = from_base64(text);
    if (!bytes)
        return fail(fmt::format("{} '{}': not base64 text", what, path));
    if (bytes->empty())
        return fail(fmt::format("{} '{}': empty", what, path));
    return std::move(*bytes);
}

// The guest's CPUID table (KVM_SET_CPUID2), as QEMU builds it for an SEV guest on this CPU
// model: every leaf the model answers, SVM hidden (no nested virtualisation), and leaf
// 8000_001F as QEMU's cpu_x86_cpuid() fills it for SEV: EAX = SEV (and SEV-ES when the policy
// asks), EBX = the sev-guest object's cbitpos and reduced-phys-bits, ECX = EDX = 0.
std::vector<CpuidEntry> guest_cpuid(CpuModel model, SevGuestConfig const& g, uint32_t apic_id, uint32_t vcpu_count)
{
    // Leaves whose subleaf (ECX) selects the answer (KVM_CPUID_FLAG_SIGNIFCANT_INDEX).
    constexpr uint32_t kIndexed[] = { 0x4, 0x7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1D, 0x1E, 0x1F, 0x24,
        0x8000001D, 0x80000020, 0x80000026 };
    constexpr uint32_t kAnyIndex = 0xFFFFFFFFu;
    std::vector<CpuidEntry> out;
    // What a guest of a KVM host sees (cpu_model.h CpuidView::Guest: the hypervisor bit, the KVM
    // leaves), for this vCPU: its APIC ID (1 EBX[31:24], 0xB EDX, 8000_001E) is its index, as in
    // the MADT and its LAPIC's ID register, out of vcpu_count (QEMU sets KVM_SET_CPUID2 per vCPU
    // the same way). The LAPIC's x2APIC and TSC_DEADLINE MSRs are not wired to MSR exits (QUIRKS.md), so
    // x2APIC and TSC-deadline are not advertised.
    cpu::CpuidContext const ctx { .view = cpu::CpuidView::Guest, .apic_id = apic_id, .vcpu_count = vcpu_count };
    auto add_leaf = [&](uint32_t leaf) {
        bool indexed = std::find(std::begin(kIndexed), std::end(kIndexed), leaf) != std::end(kIndexed);
        if (!indexed) {
            auto r = cpu::cpuid_query(model, leaf, 0, ctx);
            out.push_back({ leaf, kAnyIndex, r.eax, r.ebx, r.ecx, r.edx });
            return;
        }
        for (uint32_t sub = 0; sub < 64; ++sub) {
            auto r = cpu::cpuid_query(model, leaf, sub, ctx);
            // Leaf 0xB ends at its first invalid level (ECX[15:8] = 0), which KVM still lists
            // (arch/x86/kvm/cpuid.c do_cpuid_func, case 0xb).
            if (leaf == 0xB) {
                out.push_back({ leaf, sub, r.eax, r.ebx, r.ecx, r.edx });
                if (!(r.ecx & 0xFF00))
                    break;
                continue;
            }
            if (r.eax | r.ebx | r.ecx | r.edx)
                out.push_back({ leaf, sub, r.eax, r.ebx, r.ecx, r.edx });
        }
    };
    uint32_t max_basic = cpu::cpuid_query(model, 0, 0, ctx).eax;
    for (uint32_t leaf = 0; leaf <= max_basic && leaf < 0x100; ++leaf)
        add_leaf(leaf);
    add_leaf(cpu::kKvmCpuidSignature);
    add_leaf(cpu::kKvmCpuidFeatures);
    uint32_t max_ext = cpu::cpuid_query(model, 0x80000000u, 0).eax;
    for (uint32_t leaf = 0x80000000u; leaf <= max_ext && leaf < 0x80000100u; ++leaf)
        add_leaf(leaf);
    for (auto& e : out) {
        // KVM_FEATURE_MIGRATION_CONTROL: the hypervisor keeps the shared-regions list and the
        // migration MSR for SEV guests (the SEV live-migration series; QEMU's SEV migration
        // patches set it for an SEV guest), so Linux reports its shared pages with
        // KVM_HC_MAP_GPA_RANGE and writes KVM_MIGRATION_READY (arch/x86/kernel/kvm.c).
        if (e.function == cpu::kKvmCpuidFeatures)
            e.eax |= 1u << vmm::KVM_FEATURE_MIGRATION_CONTROL;
        if (e.function == 0x80000001u)
            e.ecx &= ~(1u << 2); // SVM (APM vol 3 Appendix E.4.2): not offered to the guest
        if (e.function == 0x8000000Au)
            e.eax = e.ebx = e.ecx = e.edx = 0; // SVM features: none without SVM
        if (e.function == 0x8000001Fu) {
            e.eax = (1u << 1) | ((g.policy & kPolicyEs) ? (1u << 3) : 0);
            e.ebx = (g.cbitpos & 0x3F) | ((g.reduced_phys_bits & 0x3F) << 6);
            e.ecx = e.edx = 0;
        }
    }
    return out;
}

SevState from_firmware_state(uint8_t s)
{
    switch (fw::GuestState(s)) {
    case fw::GuestState::LUPDATE:
        return SevState::LaunchUpdate;
    case fw::GuestState::LSECRET:
        return SevState::LaunchSecret;
    case fw::GuestState::RUNNING:
        return SevState::Running;
    case fw::GuestState::SUPDATE:
        return SevState::SendUpdate;
    case fw::GuestState::RUPDATE:
        return SevState::ReceiveUpdate;
    case fw::GuestState::SENT:
        return SevState::Sent;
    default:
        return SevState::Uninit;
    }
}

} // namespace

std::string_view sev_state_name(SevState s)
{
    switch (s) {
    case SevState::Uninit:
        return "uninit";
    case SevState::LaunchUpdate:
        return "launch-update";
    case SevState::LaunchSecret:
        return "launch-secret";
    case SevState::Running:
        return "running";
    case SevState::SendUpdate:
        return "send-update";
    case SevState::ReceiveUpdate:
        return "receive-update";
    case SevState::Sent:
        return "sent";
    }
    return "uninit";
}

Result<void, MachineError> SevRuntime::check_config(MachineConfig const& c)
{
    if (!c.confidential_guest)
        return fail("internal: no confidential guest configured");
    auto const& g = *c.confidential_guest;
    if (g.type == SevGuestConfig::Type::SevSnp)
        return fail(fmt::format("sev-snp-guest '{}': unsupported yet: sevemu runs SEV guests; SEV-SNP comes later", g.id));
    // QEMU's sev_kvm_init: an ES policy on a host without SEV-ES (CPUID 8000_001F EAX[3]; the
    // EPYC (Naples) model has none) is refused before anything is built.
    if ((g.policy & kPolicyEs) && !(cpu::cpuid_query(c.cpu_model, 0x8000001F, 0).eax & (1u << 3)))
        return fail(fmt::format("sev-guest '{}': guest policy requires SEV-ES, but host SEV-ES support unavailable "
                                "(-cpu {} has no SEV-ES)", g.id, cpu_model_info(c.cpu_model).name));
    if (g.kernel_hashes)
        return fail(fmt::format("sev-guest '{}': kernel-hashes=on needs OVMF's hashes table; sevemu boots -kernel "
                                "without guest firmware, and measures the loaded kernel itself (README)", g.id));
    if (c.memory_size > kMaxGuestRam)
        return fail(fmt::format("-m {} MiB: sevemu runs SEV guests with at most {} MiB of RAM (QUIRKS.md)",
            c.memory_size >> 20, kMaxGuestRam >> 20));
    if (c.platform_dir.empty())
        return fail(fmt::format("sev-guest '{}': no platform directory for the AMD-SP (use --platform DIR or "
                                "$SEVEMU_PLATFORM)", g.id));
    return {};
}

SevRuntime::SevRuntime(MachineConfig const& c, mmu::MemoryController& mc, devices::AmdSp& sp, devices::Bus& host_mmio,
    Trace& trace)
    : m_config(*c.confidential_guest)
    , m_model(c.cpu_model)
    , m_ram_size(c.memory_size)
    , m_mc(mc)
    , m_amd_sp(sp)
    , m_host_mmio(host_mmio)
    , m_trace(trace)
{
}

SevRuntime::~SevRuntime()
{
    // KVM's VM teardown (DEACTIVATE, DECOMMISSION) still talks to the PSP: the vCPU and VM go
    // before the driver (the AMD-SP is the board's and outlives this).
    if (m_xfer && m_host)
        m_host->free_pages(*m_xfer, 3);
    m_vcpus.clear();
    m_vm.reset();
    m_sev_host.reset();
    m_psp.reset();
}

uint32_t SevRuntime::asid() const { return m_vm ? m_vm->sev().asid : 0; }

Result<SevRuntime::LaunchInputs, MachineError> SevRuntime::read_launch_inputs(MachineConfig const& c)
{
    TRY(check_config(c));
    auto const& g = *c.confidential_guest;
    std::string what = fmt::format("sev-guest '{}'", g.id);
    LaunchInputs in;
    in.loaded = TRY(load_kernel_launch(KernelLaunch { c.memory_size, c.kernel, c.initrd, c.append, c.smp, g.cbitpos,
        bool(g.policy & kPolicyEs), c.cpu_model }));
    if (!g.dh_cert_file.empty())
        in.dh_cert = TRY(read_base64_file(what + ": dh-cert-file", g.dh_cert_file));
    if (!g.session_file.empty())
        in.session = TRY(read_base64_file(what + ": session-file", g.session_file));
    return in;
}

Result<std::unique_ptr<SevRuntime>, MachineError> SevRuntime::create(MachineConfig const& c, LaunchInputs in,
    mmu::MemoryController& mc, devices::AmdSp& sp, devices::Bus& host_mmio, Trace& trace)
{
    TRY(check_config(c));
    std::unique_ptr<SevRuntime> rt(new SevRuntime(c, mc, sp, host_mmio, trace));
    TRY(rt->build_host());
    TRY(rt->launch(in, c.smp));
    return rt;
}

// The host as Linux finds it at boot: the AMD-SP on its PCI BAR, the ccp driver's probe and
// sev_platform_init(), kvm_amd's SEV ASID ranges from CPUID 8000_001F, then a VM.
Result<void, MachineError> SevRuntime::build_host()
{
    m_host = std::make_unique<HostMemory>(m_mc, Spa(kHostReserveBase), kHostReserveEnd - kHostReserveBase);
    auto psp = PspDriver::create(*m_host, m_host_mmio, m_amd_sp.bar(), m_amd_sp.psp_version());
    if (!psp)
        return fail(fmt::format("the AMD-SP did not answer the driver's probe ({})", std::strerror(-psp.error())));
    m_psp = std::make_unique<PspDriver>(std::move(*psp));
    auto leaf = cpu::cpuid_query(m_model, 0x8000001F, 0);
    bool cpu_has_es = leaf.eax & (1u << 3);
    // Linux sets SEV_INIT_FLAGS_SEV_ES (with a TMR) only on CPUs with SEV-ES (Naples has none).
    if (auto r = m_psp->platform_init(cpu_has_es); !r)
        return fail(fmt::format("SEV platform initialisation failed: {}", op_error(r.error().err, r.error().psp_ret)));

    SevHostConfig hc;
    hc.max_asid = leaf.ecx;
    hc.min_sev_asid = leaf.edx;
    hc.es_supported = cpu_has_es;
    hc.sme_coherent = leaf.eax & (1u << 10);
    hc.sev_enc_bit = uint8_t(leaf.ebx & 0x3F); // the model's C-bit (Rome: 47), not the default 51
    m_sev_host = std::make_unique<SevHost>(*m_psp, m_mc, hc);
    // QEMU's default (legacy-vm-type=auto without INIT2-only options): a default-type VM
    // initialised with KVM_SEV_INIT.
    m_vm = std::make_unique<Vm>(*m_sev_host, KVM_X86_DEFAULT_VM);
    return {};
}

Result<void, MachineError> SevRuntime::init_vm()
{
    std::string what = fmt::format("sev-guest '{}'", m_config.id);
    uint32_t fw_error = 0;
    // QEMU 7.2's sev_kvm_init: KVM_SEV_ES_INIT when the policy has ES, else KVM_SEV_INIT (on a
    // default-type VM; KVM then gives the VM no VMSA features and no FPU state in its VMSAs).
    bool es = m_config.policy & kPolicyEs;
    if (int r = encrypt_op<kvm_sev_init>(es ? KVM_SEV_ES_INIT : KVM_SEV_INIT, nullptr, fw_error))
        return fail(fmt::format("{}: {} failed: {}", what, es ? "KVM_SEV_ES_INIT" : "KVM_SEV_INIT", op_error(r, fw_error)));

    // Guest RAM: one contiguous range of DRAM above the host reserve, memory slot 0 at GPA 0.
    Hva ram = direct_map(Spa(kGuestRamBase));
    kvm_userspace_memory_region slot { 0, 0, 0, m_ram_size, ram.value };
    if (int r = m_vm->set_user_memory_region(slot))
        return fail(fmt::format("{}: KVM_SET_USER_MEMORY_REGION for {} MiB of guest RAM failed: {}", what,
            m_ram_size >> 20, std::strerror(-r)));
    if (int r = m_vm->memory_encrypt_reg_region({ ram.value, m_ram_size }))
        return fail(fmt::format("{}: KVM_MEMORY_ENCRYPT_REG_REGION failed: {}", what, std::strerror(-r)));
    return {};
}

template <class T>
int SevRuntime::encrypt_op(uint32_t id, T* data, uint32_t& fw_error)
{
    kvm_sev_cmd cmd {};
    cmd.id = id;
    std::optional<HostBuffer> buf;
    if (data) {
        auto b = HostBuffer::create(*m_host, { reinterpret_cast<uint8_t const*>(data), sizeof *data });
        if (!b)
            return b.error();
        buf.emplace(std::move(*b));
        cmd.data = buf->hva().value;
    }
    int ret = m_vm->memory_encrypt_op(cmd);
    fw_error = cmd.error;
    if (data && !m_host->copy_from(buf->hva(), { reinterpret_cast<uint8_t*>(data), sizeof *data }))
        return ret ? ret : -EFAULT;
    return ret;
}

void SevRuntime::set_state(SevState s)
{
    if (m_trace.enabled("sev"))
        m_trace.emit("sev", fmt::format("state {} -> {}", sev_state_name(m_state), sev_state_name(s)));
    m_state = s;
}

// QEMU: sev_kvm_init() (KVM_SEV_INIT, LAUNCH_START), the RAM block notifier
// (KVM_MEMORY_ENCRYPT_REG_REGION), the loader's LAUNCH_UPDATE_DATA, and at machine-init-done
// sev_launch_get_measure() (LAUNCH_MEASURE: length query, then the blob).
Result<void, MachineError> SevRuntime::launch(LaunchInputs& in, uint32_t vcpu_count)
{
    auto const& g = m_config;
    std::string what = fmt::format("sev-guest '{}'", g.id);
    auto& loaded = in.loaded;
    auto const& dh_cert = in.dh_cert;
    auto const& session = in.session;

    TRY(init_vm());
    uint32_t fw_error = 0;
    Hva ram = direct_map(Spa(kGuestRamBase));

    // LAUNCH_START (SEV-KM API 55766 §6.2): the owner's GODH certificate and session blob, or
    // none (the firmware then makes up its own transport keys, as QEMU without the files).
    kvm_sev_launch_start start {};
    start.handle = g.handle.value_or(0);
    start.policy = uint32_t(g.policy);
    std::optional<HostBuffer> dh_buf, session_buf;
    auto to_host = [&](Bytes const& b, std::optional<HostBuffer>& slot_buf) -> Result<Hva, MachineError> {
        auto hb = HostBuffer::create(*m_host, b);
        if (!hb)
            return fail(fmt::format("{}: out of host memory", what));
        slot_buf.emplace(std::move(*hb));
        return slot_buf->hva();
    };
    if (dh_cert) {
        start.dh_uaddr = TRY(to_host(*dh_cert, dh_buf)).value;
        start.dh_len = uint32_t(dh_cert->size());
    }
    if (session) {
        start.session_uaddr = TRY(to_host(*session, session_buf)).value;
        start.session_len = uint32_t(session->size());
    }
    if (int r = encrypt_op(KVM_SEV_LAUNCH_START, &start, fw_error)) {
        std::string hint;
        if (dh_cert.has_value() != session.has_value())
            hint = " (dh-cert-file and session-file are given together: the session is bound to the GODH key)";
        else if (fw_error == uint16_t(fw::Status::INVALID_CERTIFICATE))
            hint = " (is dh-cert-file the owner's GODH certificate for this platform's PDH?)";
        else if (fw_error == uint16_t(fw::Status::POLICY_FAILURE))
            hint = " (the policy is not allowed on this platform, or differs from the session's)";
        else if (fw_error == uint16_t(fw::Status::BAD_MEASUREMENT))
            hint = " (session-file was not made with dh-cert-file for this platform and policy)";
        return fail(fmt::format("{}: LAUNCH_START failed: {}{}", what, op_error(r, fw_error), hint));
    }
    set_state(SevState::LaunchUpdate);

    // The loaded image, page for page, into guest RAM (plaintext, as the loader writes it),
    // then LAUNCH_UPDATE_DATA over each measured range in ascending order: the firmware
    // encrypts the pages in place with the guest's key and extends the launch digest.
    std::vector<uint8_t> page(kPageSize);
    for (auto const& range : loaded.ranges) {
        for (uint64_t off = 0; off < range.size; off += kPageSize) {
            uint64_t gpa = range.gpa + off;
            if (!loaded.scratch->read(Spa(gpa), page, mmu::KeyId::none())
                || !m_mc.write(Spa(kGuestRamBase + gpa), page, mmu::KeyId::none()))
                return fail(fmt::format("{}: measured page {:#x} is outside guest RAM", what, gpa));
        }
        kvm_sev_launch_update_data update { ram.value + range.gpa, uint32_t(range.size) };
        if (int r = encrypt_op(KVM_SEV_LAUNCH_UPDATE_DATA, &update, fw_error))
            return fail(fmt::format("{}: LAUNCH_UPDATE_DATA of GPA {:#x}-{:#x} failed: {}", what, range.gpa,
                range.gpa + range.size - 1, op_error(r, fw_error)));
    }

    // The vCPUs (QEMU creates them before the launch's end), then for SEV-ES their registers:
    // KVM_SEV_LAUNCH_UPDATE_VMSA syncs each vCPU's VMSA from them and has the firmware measure
    // and encrypt it, in vCPU order, before LAUNCH_MEASURE (QEMU's sev_launch_get_measure).
    TRY(create_vcpus(loaded.kernel.entry, vcpu_count));
    if (g.policy & kPolicyEs) {
        if (loaded.sev_es_vcpus.size() != m_vcpus.size())
            return fail(fmt::format("{}: internal: {} SEV-ES launch states for {} vCPUs", what, loaded.sev_es_vcpus.size(),
                m_vcpus.size()));
        for (size_t i = 0; i < m_vcpus.size(); ++i) {
            m_vcpus[i]->state() = loaded.sev_es_vcpus[i].save;
            m_vcpus[i]->gprs() = loaded.sev_es_vcpus[i].gprs;
        }
        if (int r = encrypt_op<kvm_sev_init>(KVM_SEV_LAUNCH_UPDATE_VMSA, nullptr, fw_error))
            return fail(fmt::format("{}: LAUNCH_UPDATE_VMSA failed: {}", what, op_error(r, fw_error)));
        // The AP page's jump table (sev_launch.h), which the AP_JUMP_TABLE NAE event's GET
        // reports until the guest sets another (OVMF reserves and reports its own the same way).
        m_vm->set_ap_jump_table(kSevEsApPageGpa);
        if (m_trace.enabled("sev"))
            m_trace.emit("sev", fmt::format("{} VMSA(s) measured and encrypted; AP jump table at GPA {:#x}", m_vcpus.size(),
                kSevEsApPageGpa));
    }

    // LAUNCH_MEASURE: the length first (the firmware answers INVALID_LEN with it), then the blob.
    kvm_sev_launch_measure measure {};
    (void)encrypt_op(KVM_SEV_LAUNCH_MEASURE, &measure, fw_error);
    if (measure.len == 0 || measure.len > kPageSize)
        return fail(fmt::format("{}: LAUNCH_MEASURE did not report its length: {}", what, op_error(-EIO, fw_error)));
    auto out = HostBuffer::create(*m_host, {}, measure.len);
    if (!out)
        return fail(fmt::format("{}: out of host memory", what));
    measure.uaddr = out->hva().value;
    if (int r = encrypt_op(KVM_SEV_LAUNCH_MEASURE, &measure, fw_error))
        return fail(fmt::format("{}: LAUNCH_MEASURE failed: {}", what, op_error(r, fw_error)));
    auto blob = out->read(measure.len);
    if (!blob)
        return fail(fmt::format("{}: LAUNCH_MEASURE output unreadable", what));
    m_measurement = std::move(*blob);
    set_state(SevState::LaunchSecret);
    if (m_trace.enabled("sev"))
        m_trace.emit("sev", fmt::format("launch measured: {} range(s), measurement {} mnonce {}", loaded.ranges.size(),
            to_hex(std::span(m_measurement).first(std::min<size_t>(32, m_measurement.size()))),
            to_hex(std::span(m_measurement).subspan(std::min<size_t>(32, m_measurement.size())))));

    if (auto const* mb = loaded.kernel.multiboot())
        m_boot = mb->boot;
    if (auto const* lb = loaded.kernel.linux_boot())
        m_linux_boot = *lb;
    m_memory_map = loaded.memory_map;
    m_ranges = loaded.ranges;
    return {};
}

// The vCPUs, as QEMU creates them (KVM_CREATE_VCPU and KVM_SET_CPUID2 for each, then the
// registers). The BSP gets the loader's entry state (emulator/boot.h), as the plain machine's
// CPU does: the segments, descriptor tables, control registers, RFLAGS, RIP and RAX/RSP into the
// VMCB save area (KVM_SET_SREGS/KVM_SET_REGS), the other GPRs beside it. An AP is in INIT's
// state and runs only after its LAPIC got a start-up IPI (the Machine delivers INIT and SIPI to
// the VMCB, vmm::Vcpu::init_event/deliver_sipi). Plain SEV measures no register state (the
// VMSA is neither encrypted nor measured before SEV-ES), so -smp changes the launch digest only
// through the MADT the loader wrote (README, "What a -kernel launch measures").
Result<void, MachineError> SevRuntime::create_vcpus(BootEntryState const& entry, uint32_t count)
{
    for (uint32_t id = 0; id < count; ++id) {
        auto v = vmm::Vcpu::create(*m_vm, id);
        if (!v)
            return fail(fmt::format("sev-guest '{}': cannot create vCPU {}: {}", m_config.id, id, std::strerror(-v.error())));
        (*v)->set_cpuid(guest_cpuid(m_model, m_config, id, count));
        if (id > 0)
            (*v)->init_event();
        m_vcpus.push_back(std::move(*v));
    }
    auto& bsp = *m_vcpus.front();
    apply_entry_state(bsp.state(), bsp.gprs(), entry);
    return {};
}

Result<SevInfo, SevError> SevRuntime::query()
{
    auto status = m_psp->platform_status();
    if (!status)
        return sev_fail(fmt::format("SEV: failed to get platform status {}", op_error(status.error().err, status.error().psp_ret)));
    kvm_sev_guest_status gs {};
    uint32_t fw_error = 0;
    if (int r = encrypt_op(KVM_SEV_GUEST_STATUS, &gs, fw_error))
        return sev_fail(fmt::format("SEV: failed to get guest status {}", op_error(r, fw_error)));
    SevInfo info;
    info.api_major = status->api_major;
    info.api_minor = status->api_minor;
    info.build_id = status->build;
    info.handle = gs.handle;
    info.policy = gs.policy;
    info.state = from_firmware_state(uint8_t(gs.state));
    return info;
}

// QEMU's sev_get_capabilities(): SEV_PDH_CERT_EXPORT and SEV_GET_ID2 on /dev/sev, each a length
// query then the data, and CPUID 8000_001F.
Result<SevCapabilities, SevError> SevRuntime::capabilities()
{
    SevCapabilities cap;
    fw::PdhCertExportBuf exp {};
    auto q = m_psp->do_cmd(fw::CommandId::PDH_CERT_EXPORT, { reinterpret_cast<uint8_t*>(&exp), sizeof exp });
    if (!q && q.error().psp_ret != uint16_t(fw::Status::INVALID_LEN))
        return sev_fail(fmt::format("SEV: Failed to export PDH cert {}", op_error(q.error().err, q.error().psp_ret)));
    if (exp.pdh_cert_length == 0 || exp.pdh_cert_length > 0x4000 || exp.certs_length == 0 || exp.certs_length > 0x4000)
        return sev_fail("SEV: Failed to export PDH cert: the firmware reported no length");
    auto pdh = HostBuffer::create(*m_host, {}, exp.pdh_cert_length);
    auto chain = HostBuffer::create(*m_host, {}, exp.certs_length);
    if (!pdh || !chain)
        return sev_fail("SEV: out of host memory");
    exp.pdh_cert_paddr = m_host->to_spa(pdh->hva())->value;
    exp.certs_paddr = m_host->to_spa(chain->hva())->value;
    if (auto r = m_psp->do_cmd(fw::CommandId::PDH_CERT_EXPORT, { reinterpret_cast<uint8_t*>(&exp), sizeof exp }); !r)
        return sev_fail(fmt::format("SEV: Failed to export PDH cert {}", op_error(r.error().err, r.error().psp_ret)));
    auto pdh_bytes = pdh->read(exp.pdh_cert_length);
    auto chain_bytes = chain->read(exp.certs_length);
    if (!pdh_bytes || !chain_bytes)
        return sev_fail("SEV: Failed to export PDH cert: output unreadable");
    cap.pdh = std::move(*pdh_bytes);
    cap.cert_chain = std::move(*chain_bytes);

    fw::GetIdBuf id {};
    q = m_psp->do_cmd(fw::CommandId::GET_ID, { reinterpret_cast<uint8_t*>(&id), sizeof id });
    if (!q && q.error().psp_ret != uint16_t(fw::Status::INVALID_LEN))
        return sev_fail(fmt::format("SEV: Failed to get ID {}", op_error(q.error().err, q.error().psp_ret)));
    if (id.id_length == 0 || id.id_length > kPageSize)
        return sev_fail("SEV: Failed to get ID: the firmware reported no length");
    auto id_buf = HostBuffer::create(*m_host, {}, id.id_length);
    if (!id_buf)
        return sev_fail("SEV: out of host memory");
    id.id_paddr = m_host->to_spa(id_buf->hva())->value;
    if (auto r = m_psp->do_cmd(fw::CommandId::GET_ID, { reinterpret_cast<uint8_t*>(&id), sizeof id }); !r)
        return sev_fail(fmt::format("SEV: Failed to get ID {}", op_error(r.error().err, r.error().psp_ret)));
    auto id_bytes = id_buf->read(id.id_length);
    if (!id_bytes)
        return sev_fail("SEV: Failed to get ID: output unreadable");
    cap.cpu0_id = std::move(*id_bytes);

    cap.cbitpos = cpu::cpuid_query(m_model, 0x8000001F, 0).ebx & 0x3F;
    // QEMU reports 1 here whatever the host's EBX[11:6] says: "When SEV feature is enabled, we
    // lose one bit in guest physical addressing" (target/i386/sev.c).
    cap.reduced_phys_bits = 1;
    return cap;
}

Result<Bytes, SevError> SevRuntime::launch_measurement() const
{
    // QEMU's sev_get_launch_measurement(): available from launch-secret on.
    if (m_state < SevState::LaunchSecret || m_measurement.empty())
        return sev_fail("SEV launch measurement is not available");
    return m_measurement;
}

// QEMU's sev_inject_launch_secret(): KVM_SEV_LAUNCH_SECRET with the guest range's Hva.
Result<void, SevError> SevRuntime::inject_launch_secret(std::span<uint8_t const> header, std::span<uint8_t const> secret,
    uint64_t gpa)
{
    if (m_state != SevState::LaunchSecret)
        return sev_fail(fmt::format("SEV: Not in correct state. (LSECRET) {:x}", unsigned(m_state)));
    if (header.empty())
        return sev_fail("SEV: Failed to decode sequence header");
    if (secret.empty())
        return sev_fail("SEV: Failed to decode data");
    // gpa2hva(): the whole range must be RAM in one memory slot.
    std::optional<uint64_t> hva;
    for (auto const& [id, s] : m_vm->memory_slots()) {
        if (gpa >= s.guest_phys_addr && gpa - s.guest_phys_addr < s.memory_size) {
            if (secret.size() > s.memory_size - (gpa - s.guest_phys_addr))
                return sev_fail(fmt::format("SEV: Failed to calculate guest address: Size of memory region at 0x{:x} "
                                            "exceeded", gpa));
            hva = s.userspace_addr + (gpa - s.guest_phys_addr);
        }
    }
    if (!hva)
        return sev_fail(fmt::format("SEV: Failed to calculate guest address: No memory is mapped at address 0x{:x}", gpa));
    auto hdr_buf = HostBuffer::create(*m_host, header);
    auto data_buf = HostBuffer::create(*m_host, secret);
    if (!hdr_buf || !data_buf)
        return sev_fail("SEV: out of host memory");
    kvm_sev_launch_secret input {};
    input.hdr_uaddr = hdr_buf->hva().value;
    input.hdr_len = uint32_t(header.size());
    input.trans_uaddr = data_buf->hva().value;
    input.trans_len = uint32_t(secret.size());
    input.guest_uaddr = *hva;
    input.guest_len = uint32_t(secret.size());
    uint32_t fw_error = 0;
    if (int r = encrypt_op(KVM_SEV_LAUNCH_SECRET, &input, fw_error))
        return sev_fail(fmt::format("SEV: failed to inject secret {}", op_error(r, fw_error)));
    if (m_trace.enabled("sev"))
        m_trace.emit("sev", fmt::format("launch secret of {} bytes injected at GPA {:#x}", secret.size(), gpa));
    return {};
}

// QEMU's sev_get_attestation_report(): the report's length first, then the report.
Result<Bytes, SevError> SevRuntime::attestation_report(std::span<uint8_t const> mnonce)
{
    kvm_sev_attestation_report input {};
    if (mnonce.size() != sizeof input.mnonce)
        return sev_fail(fmt::format("SEV: mnonce must be {} bytes (got {})", sizeof input.mnonce, mnonce.size()));
    uint32_t fw_error = 0;
    int r = encrypt_op(KVM_SEV_GET_ATTESTATION_REPORT, &input, fw_error);
    if (r < 0 && fw_error != uint16_t(fw::Status::INVALID_LEN))
        return sev_fail(fmt::format("SEV: Failed to query the attestation report length {}", op_error(r, fw_error)));
    if (input.len == 0 || input.len > SEV_FW_BLOB_MAX_SIZE)
        return sev_fail("SEV: Failed to query the attestation report length: the firmware reported none");
    auto out = HostBuffer::create(*m_host, {}, input.len);
    if (!out)
        return sev_fail("SEV: out of host memory");
    input.uaddr = out->hva().value;
    std::copy(mnonce.begin(), mnonce.end(), input.mnonce);
    if ((r = encrypt_op(KVM_SEV_GET_ATTESTATION_REPORT, &input, fw_error)))
        return sev_fail(fmt::format("SEV: Failed to get attestation report {}", op_error(r, fw_error)));
    auto report = out->read(input.len);
    if (!report)
        return sev_fail("SEV: Failed to get attestation report: output unreadable");
    return std::move(*report);
}

Result<void, SevError> SevRuntime::launch_finish()
{
    // Nothing to finish once the launch is over (running, or migrating in either direction).
    if (m_state >= SevState::Running)
        return {};
    uint32_t fw_error = 0;
    if (int r = encrypt_op<kvm_sev_init>(KVM_SEV_LAUNCH_FINISH, nullptr, fw_error))
        return sev_fail(fmt::format("SEV: LAUNCH_FINISH failed: {}", op_error(r, fw_error)));
    set_state(SevState::Running);
    return {};
}

uint64_t SevRuntime::map_gpa_range(GpaRangeChange c)
{
    uint64_t page_size = c.attributes & 0xF;
    bool bad = (c.attributes & ~(0xFull | KVM_MAP_GPA_RANGE_ENCRYPTED)) || page_size > KVM_MAP_GPA_RANGE_PAGE_SZ_1G;
    if (m_trace.enabled("sev"))
        m_trace.emit("sev", fmt::format("KVM_HC_MAP_GPA_RANGE gpa {:#x} pages {} attributes {:#x}{}", c.gpa, c.pages,
            c.attributes, bad ? ": -KVM_EINVAL" : ""));
    if (bad)
        return uint64_t(-int64_t(KVM_EINVAL));
    m_gpa_changes.push_back(c);
    m_vm->map_gpa_range(c.gpa >> kPageShift, c.pages, c.attributes & KVM_MAP_GPA_RANGE_ENCRYPTED);
    return 0;
}

bool SevRuntime::migration_ready() const { return m_vm->migration_control() & KVM_MIGRATION_READY; }

// ---------------------------------------------------------------- live migration
// QEMU's out-of-tree SEV migration series (target/i386/sev.c): sev_save_setup() issues
// SEND_START with the target's PDH and chains from migrate-set-sev-info, sev_save_outgoing_page()
// one SEND_UPDATE_DATA per private page, sev_save_finish/SEND_FINISH at the stop, and the target
// sev_load_incoming_page() / RECEIVE_* the other way. Every step goes through the KVM layer and
// the firmware; nothing is encrypted on the side.

Result<void, SevError> SevRuntime::set_migration_target(Bytes pdh, Bytes plat_cert, Bytes amd_cert)
{
    // The firmware's buffers: a PDH certificate, the PEK, OCA and CEK, the ASK and ARK
    // (sev_cert.h sizes); the firmware checks them at SEND_START, here only their presence.
    if (pdh.empty() || plat_cert.empty() || amd_cert.empty())
        return sev_fail("SEV: migrate-set-sev-info needs pdh, plat-cert and amd-cert");
    if (pdh.size() > SEV_FW_BLOB_MAX_SIZE || plat_cert.size() > SEV_FW_BLOB_MAX_SIZE || amd_cert.size() > SEV_FW_BLOB_MAX_SIZE)
        return sev_fail(fmt::format("SEV: a certificate of migrate-set-sev-info exceeds {} bytes", SEV_FW_BLOB_MAX_SIZE));
    m_target_pdh = std::move(pdh);
    m_target_plat = std::move(plat_cert);
    m_target_amd = std::move(amd_cert);
    return {};
}

Result<Bytes, SevError> SevRuntime::platform_pdh()
{
    auto cap = TRY(capabilities());
    return std::move(cap.pdh);
}

Result<Bytes, SevError> SevRuntime::send_start()
{
    if (m_state != SevState::Running)
        return sev_fail(fmt::format("SEV: cannot start sending a guest in state '{}'", sev_state_name(m_state)));
    if (!has_migration_target())
        return sev_fail("SEV: the target's certificates are not set (use migrate-set-sev-info with the target's "
                        "query-sev-capabilities)");
    uint32_t fw_error = 0;
    kvm_sev_send_start q {};
    int r = encrypt_op(KVM_SEV_SEND_START, &q, fw_error);
    if (r != -EIO || fw_error != uint16_t(fw::Status::INVALID_LEN) || q.session_len == 0 || q.session_len > kPageSize)
        return sev_fail(fmt::format("SEV: SEND_START did not report the session length: {}", op_error(r, fw_error)));
    auto pdh = HostBuffer::create(*m_host, m_target_pdh);
    auto plat = HostBuffer::create(*m_host, m_target_plat);
    auto amd = HostBuffer::create(*m_host, m_target_amd);
    auto session = HostBuffer::create(*m_host, {}, q.session_len);
    if (!pdh || !plat || !amd || !session)
        return sev_fail("SEV: out of host memory");
    kvm_sev_send_start s {};
    s.pdh_cert_uaddr = pdh->hva().value;
    s.pdh_cert_len = uint32_t(m_target_pdh.size());
    s.plat_certs_uaddr = plat->hva().value;
    s.plat_certs_len = uint32_t(m_target_plat.size());
    s.amd_certs_uaddr = amd->hva().value;
    s.amd_certs_len = uint32_t(m_target_amd.size());
    s.session_uaddr = session->hva().value;
    s.session_len = q.session_len;
    if ((r = encrypt_op(KVM_SEV_SEND_START, &s, fw_error))) {
        std::string hint;
        if (fw_error == uint16_t(fw::Status::POLICY_FAILURE))
            hint = m_config.policy & fw::policy::NOSEND ? " (the guest's policy has NOSEND: it may never be migrated)"
                                                         : " (the guest's policy does not allow this target)";
        else if (fw_error == uint16_t(fw::Status::INVALID_CERTIFICATE))
            hint = " (the target's chain does not verify: its PDH against plat-cert, or plat-cert and amd-cert up to "
                   "this platform's AMD root)";
        return sev_fail(fmt::format("SEV: SEND_START failed: {}{}", op_error(r, fw_error), hint));
    }
    auto blob = session->read(q.session_len);
    if (!blob)
        return sev_fail("SEV: SEND_START output unreadable");
    set_state(SevState::SendUpdate);
    return std::move(*blob);
}

// The three pages of m_xfer: the kvm structure, the packet header, the packet.
Result<Spa, SevError> SevRuntime::xfer_buffers()
{
    if (!m_xfer) {
        auto spa = m_host->alloc_pages(3);
        if (!spa)
            return sev_fail("SEV: out of host memory");
        m_xfer = *spa;
    }
    return *m_xfer;
}

// encrypt_op through the kept structure page.
int SevRuntime::xfer_op(uint32_t id, void* data, size_t size, uint32_t& fw_error)
{
    Hva at = direct_map(*m_xfer);
    if (!m_host->copy_to(at, { static_cast<uint8_t const*>(data), size }))
        return -EFAULT;
    kvm_sev_cmd cmd {};
    cmd.id = id;
    cmd.data = at.value;
    int ret = m_vm->memory_encrypt_op(cmd);
    fw_error = cmd.error;
    if (!m_host->copy_from(at, { static_cast<uint8_t*>(data), size }))
        return ret ? ret : -EFAULT;
    return ret;
}

Result<uint32_t, SevError> SevRuntime::packet_header_length()
{
    // The header's size is fixed by the firmware (0x34: SEV-KM API 55766 §6.15's packet
    // header); QEMU asks once per migration, sevemu too (the first call).
    if (m_packet_header_len == 0) {
        if (m_state != SevState::SendUpdate)
            return sev_fail(fmt::format("SEV: SEND_UPDATE_DATA in state '{}'", sev_state_name(m_state)));
        uint32_t fw_error = 0;
        kvm_sev_send_update_data q {};
        int r = encrypt_op(KVM_SEV_SEND_UPDATE_DATA, &q, fw_error);
        if (r != -EIO || fw_error != uint16_t(fw::Status::INVALID_LEN) || q.hdr_len == 0 || q.hdr_len > kPageSize)
            return sev_fail(fmt::format("SEV: SEND_UPDATE_DATA did not report the header length: {}", op_error(r, fw_error)));
        m_packet_header_len = q.hdr_len;
    }
    return m_packet_header_len;
}

Result<void, SevError> SevRuntime::send_page(uint64_t gpa, std::span<uint8_t> header, std::span<uint8_t> data)
{
    if (m_state != SevState::SendUpdate)
        return sev_fail(fmt::format("SEV: SEND_UPDATE_DATA in state '{}'", sev_state_name(m_state)));
    if ((gpa & kPageMask) || gpa >= m_ram_size)
        return sev_fail(fmt::format("SEV: GPA {:#x} is not a page of guest RAM", gpa));
    uint32_t hdr_len = TRY(packet_header_length());
    if (header.size() != hdr_len || data.size() != kPageSize)
        return sev_fail("SEV: SEND_UPDATE_DATA into buffers of the wrong size");
    Spa xfer = TRY(xfer_buffers());
    Hva hdr = direct_map(xfer + kPageSize), trans = direct_map(xfer + 2 * kPageSize);
    kvm_sev_send_update_data u { hdr.value, hdr_len, direct_map(Spa(kGuestRamBase + gpa)).value, uint32_t(kPageSize),
        trans.value, uint32_t(kPageSize) };
    uint32_t fw_error = 0;
    if (int r = xfer_op(KVM_SEV_SEND_UPDATE_DATA, &u, sizeof u, fw_error))
        return sev_fail(fmt::format("SEV: SEND_UPDATE_DATA of GPA {:#x} failed: {}", gpa, op_error(r, fw_error)));
    if (!m_host->copy_from(hdr, header) || !m_host->copy_from(trans, data))
        return sev_fail("SEV: SEND_UPDATE_DATA output unreadable");
    return {};
}

bool SevRuntime::sev_es() const { return m_config.policy & kPolicyEs; }

// The VMSA packet of one vCPU (KVM_SEV_SEND_UPDATE_VMSA, vm_migration.cpp), through the same
// transfer pages as send_page.
Result<void, SevError> SevRuntime::send_vmsa(size_t index, std::span<uint8_t> header, std::span<uint8_t> data)
{
    if (m_state != SevState::SendUpdate)
        return sev_fail(fmt::format("SEV: SEND_UPDATE_VMSA in state '{}'", sev_state_name(m_state)));
    if (!sev_es() || index >= m_vcpus.size())
        return sev_fail(fmt::format("SEV: SEND_UPDATE_VMSA of vCPU {}: not an SEV-ES vCPU of this guest", index));
    uint32_t hdr_len = TRY(packet_header_length());
    if (header.size() != hdr_len || data.size() != kPageSize)
        return sev_fail("SEV: SEND_UPDATE_VMSA into buffers of the wrong size");
    Spa xfer = TRY(xfer_buffers());
    Hva hdr = direct_map(xfer + kPageSize), trans = direct_map(xfer + 2 * kPageSize);
    kvm_sev_send_update_vmsa u { m_vcpus[index]->id(), hdr.value, hdr_len, trans.value, uint32_t(kPageSize) };
    uint32_t fw_error = 0;
    if (int r = xfer_op(KVM_SEV_SEND_UPDATE_VMSA, &u, sizeof u, fw_error))
        return sev_fail(fmt::format("SEV: SEND_UPDATE_VMSA of vCPU {} failed: {}", index, op_error(r, fw_error)));
    if (!m_host->copy_from(hdr, header) || !m_host->copy_from(trans, data))
        return sev_fail("SEV: SEND_UPDATE_VMSA output unreadable");
    return {};
}

Result<void, SevError> SevRuntime::send_finish()
{
    uint32_t fw_error = 0;
    if (int r = encrypt_op<kvm_sev_init>(KVM_SEV_SEND_FINISH, nullptr, fw_error))
        return sev_fail(fmt::format("SEV: SEND_FINISH failed: {}", op_error(r, fw_error)));
    set_state(SevState::Sent);
    return {};
}

Result<void, SevError> SevRuntime::send_cancel()
{
    if (m_state != SevState::SendUpdate)
        return {};
    uint32_t fw_error = 0;
    if (int r = encrypt_op<kvm_sev_init>(KVM_SEV_SEND_CANCEL, nullptr, fw_error))
        return sev_fail(fmt::format("SEV: SEND_CANCEL failed: {}", op_error(r, fw_error)));
    set_state(SevState::Running);
    return {};
}

Result<std::unique_ptr<SevRuntime>, MachineError> SevRuntime::create_incoming(MachineConfig const& c,
    mmu::MemoryController& mc, devices::AmdSp& sp, devices::Bus& host_mmio, Trace& trace)
{
    TRY(check_config(c));
    std::unique_ptr<SevRuntime> rt(new SevRuntime(c, mc, sp, host_mmio, trace));
    TRY(rt->build_host());
    TRY(rt->init_vm());
    // The vCPUs' registers come from the stream; each starts like an AP until then.
    TRY(rt->create_vcpus(BootEntryState {}, c.smp));
    rt->m_vcpus.front()->init_event();
    return rt;
}

Result<void, SevError> SevRuntime::receive_start(uint32_t policy, std::span<uint8_t const> sender_pdh,
    std::span<uint8_t const> session)
{
    if (m_state != SevState::Uninit)
        return sev_fail(fmt::format("SEV: RECEIVE_START in state '{}'", sev_state_name(m_state)));
    // The target's own -object sev-guest names the policy it expects; the firmware checks the
    // session against the policy it is given (a changed policy breaks the session's MAC).
    if (policy != uint32_t(m_config.policy))
        return sev_fail(fmt::format("SEV: the incoming guest's policy {:#x} differs from this sev-guest's {:#x}", policy,
            uint32_t(m_config.policy)));
    if (sender_pdh.empty() || session.empty() || sender_pdh.size() > SEV_FW_BLOB_MAX_SIZE || session.size() > SEV_FW_BLOB_MAX_SIZE)
        return sev_fail("SEV: RECEIVE_START needs the sender's PDH and session");
    auto pdh = HostBuffer::create(*m_host, sender_pdh);
    auto blob = HostBuffer::create(*m_host, session);
    if (!pdh || !blob)
        return sev_fail("SEV: out of host memory");
    kvm_sev_receive_start r {};
    r.handle = 0;
    r.policy = policy;
    r.pdh_uaddr = pdh->hva().value;
    r.pdh_len = uint32_t(sender_pdh.size());
    r.session_uaddr = blob->hva().value;
    r.session_len = uint32_t(session.size());
    uint32_t fw_error = 0;
    if (int ret = encrypt_op(KVM_SEV_RECEIVE_START, &r, fw_error))
        return sev_fail(fmt::format("SEV: RECEIVE_START failed: {}", op_error(ret, fw_error)));
    set_state(SevState::ReceiveUpdate);
    return {};
}

Result<void, SevError> SevRuntime::receive_page(uint64_t gpa, std::span<uint8_t const> header, std::span<uint8_t const> data)
{
    if (m_state != SevState::ReceiveUpdate)
        return sev_fail(fmt::format("SEV: RECEIVE_UPDATE_DATA in state '{}'", sev_state_name(m_state)));
    if ((gpa & kPageMask) || gpa >= m_ram_size)
        return sev_fail(fmt::format("SEV: GPA {:#x} is not a page of guest RAM", gpa));
    if (header.empty() || header.size() > kPageSize || data.size() != kPageSize)
        return sev_fail(fmt::format("SEV: a packet for GPA {:#x} must be a header and one page", gpa));
    Spa xfer = TRY(xfer_buffers());
    Hva hdr = direct_map(xfer + kPageSize), trans = direct_map(xfer + 2 * kPageSize);
    if (!m_host->copy_to(hdr, header) || !m_host->copy_to(trans, data))
        return sev_fail("SEV: out of host memory");
    kvm_sev_receive_update_data u { hdr.value, uint32_t(header.size()), direct_map(Spa(kGuestRamBase + gpa)).value,
        uint32_t(kPageSize), trans.value, uint32_t(kPageSize) };
    uint32_t fw_error = 0;
    if (int r = xfer_op(KVM_SEV_RECEIVE_UPDATE_DATA, &u, sizeof u, fw_error))
        return sev_fail(fmt::format("SEV: RECEIVE_UPDATE_DATA of GPA {:#x} failed: {}", gpa, op_error(r, fw_error)));
    return {};
}

Result<void, SevError> SevRuntime::receive_vmsa(size_t index, std::span<uint8_t const> header, std::span<uint8_t const> data)
{
    if (m_state != SevState::ReceiveUpdate)
        return sev_fail(fmt::format("SEV: RECEIVE_UPDATE_VMSA in state '{}'", sev_state_name(m_state)));
    if (!sev_es() || index >= m_vcpus.size())
        return sev_fail(fmt::format("SEV: RECEIVE_UPDATE_VMSA of vCPU {}: not an SEV-ES vCPU of this guest", index));
    if (header.empty() || header.size() > kPageSize || data.size() != kPageSize)
        return sev_fail(fmt::format("SEV: the VMSA packet of vCPU {} must be a header and one page", index));
    if (m_vcpus[index]->guest_state_protected())
        return sev_fail(fmt::format("SEV: vCPU {} already has its VMSA", index));
    Spa xfer = TRY(xfer_buffers());
    Hva hdr = direct_map(xfer + kPageSize), trans = direct_map(xfer + 2 * kPageSize);
    if (!m_host->copy_to(hdr, header) || !m_host->copy_to(trans, data))
        return sev_fail("SEV: out of host memory");
    kvm_sev_receive_update_vmsa u { m_vcpus[index]->id(), hdr.value, uint32_t(header.size()), trans.value,
        uint32_t(kPageSize) };
    uint32_t fw_error = 0;
    if (int r = xfer_op(KVM_SEV_RECEIVE_UPDATE_VMSA, &u, sizeof u, fw_error))
        return sev_fail(fmt::format("SEV: RECEIVE_UPDATE_VMSA of vCPU {} failed: {}", index, op_error(r, fw_error)));
    return {};
}

Result<void, SevError> SevRuntime::write_shared_page(uint64_t gpa, std::span<uint8_t const> data)
{
    if ((gpa & kPageMask) || gpa >= m_ram_size || data.size() != kPageSize)
        return sev_fail(fmt::format("SEV: GPA {:#x} is not a page of guest RAM", gpa));
    if (!m_mc.write(Spa(kGuestRamBase + gpa), data, mmu::KeyId::none()))
        return sev_fail(fmt::format("SEV: GPA {:#x} is not DRAM", gpa));
    return {};
}

Result<void, SevError> SevRuntime::set_shared_regions(std::span<kvm_shared_region const> regions)
{
    uint32_t count = uint32_t(regions.size());
    auto n = HostBuffer::create(*m_host, { reinterpret_cast<uint8_t const*>(&count), sizeof count });
    auto buf = HostBuffer::create(*m_host, { reinterpret_cast<uint8_t const*>(regions.data()), regions.size_bytes() });
    if (!n || !buf)
        return sev_fail("SEV: out of host memory");
    kvm_shared_pages_list list { n->hva().value, buf->hva().value, uint32_t(regions.size_bytes()) };
    if (int r = m_vm->set_shared_pages_list(list))
        return sev_fail(fmt::format("SEV: KVM_SET_SHARED_PAGES_LIST failed: {}", std::strerror(-r)));
    return {};
}

Result<void, SevError> SevRuntime::receive_finish()
{
    if (m_state != SevState::ReceiveUpdate)
        return sev_fail(fmt::format("SEV: RECEIVE_FINISH in state '{}'", sev_state_name(m_state)));
    uint32_t fw_error = 0;
    if (int r = encrypt_op<kvm_sev_init>(KVM_SEV_RECEIVE_FINISH, nullptr, fw_error))
        return sev_fail(fmt::format("SEV: RECEIVE_FINISH failed: {}", op_error(r, fw_error)));
    set_state(SevState::Running);
    return {};
}

bool SevRuntime::read_guest_physical(uint64_t gpa, std::span<uint8_t> out) const
{
    size_t done = 0;
    while (done < out.size()) {
        uint64_t at = gpa + done;
        if (at < gpa)
            return false;
        size_t n = std::min<size_t>(out.size() - done, kPageSize - (at & kPageMask));
        auto spa = m_vm->gpa_to_spa(Gpa(at));
        if (!spa || !m_mc.read(*spa, out.subspan(done, n), mmu::KeyId::none()))
            return false;
        done += n;
    }
    return true;
}

} // namespace sevemu::emulator
