// The KVM SEV ioctls, each checked in the order arch/x86/kvm/svm/sev.c checks them.
#include "emulator/vmm/vm.h"
#include "emulator/vmm/vcpu.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace sevemu::vmm {

using firmware::CommandId;

namespace {
constexpr uint16_t GHCB_VERSION_MAX = 2;
constexpr uint16_t GHCB_VERSION_MIN = 1;
constexpr uint32_t KVM_MEM_LOG_DIRTY_PAGES = 1u << 0;
constexpr uint32_t KVM_MEM_READONLY = 1u << 1;
constexpr uint32_t KVM_USER_MEM_SLOTS = 32764;

uint64_t round_down16(uint64_t v) { return v & ~uint64_t(15); }
uint64_t round_up16(uint64_t v) { return (v + 15) & ~uint64_t(15); }
bool aligned16(uint64_t v) { return (v & 15) == 0; }
} // namespace

// ---------------------------------------------------------------------------------------------
SevHost::SevHost(PspDriver& psp, mmu::MemoryController& mc, SevHostConfig config)
    : m_psp(psp)
    , m_mc(mc)
    , m_config(config)
    , m_used(config.max_asid + 1, false)
    , m_reclaim(config.max_asid + 1, false)
{
}

// sev_flush_asids() + __sev_recycle_asids(): WBINVD on every CPU, then DF_FLUSH; the reclaimed
// ASIDs become free again.
bool SevHost::recycle_asids(uint32_t min, uint32_t max)
{
    bool any = false;
    for (uint32_t a = min; a <= max && a < m_reclaim.size(); ++a)
        any |= m_reclaim[a];
    if (!any)
        return false;
    m_mc.wbinvd();
    if (!m_psp.do_cmd(CommandId::DF_FLUSH, {}))
        return false;
    for (size_t a = 0; a < m_reclaim.size(); ++a) {
        if (m_reclaim[a])
            m_used[a] = false;
        m_reclaim[a] = false;
    }
    return true;
}

Result<uint32_t, int> SevHost::asid_new(bool es)
{
    // SEV guests use min_sev_asid..max_sev_asid; SEV-ES guests 1..min_sev_asid-1.
    uint32_t min = es ? 1 : m_config.min_sev_asid;
    uint32_t max = es ? m_config.min_sev_asid - 1 : m_config.max_asid;
    if (min > max || (es && !m_config.es_supported))
        return make_unexpected(-ENOTTY);
    for (int attempt = 0; attempt < 2; ++attempt) {
        for (uint32_t a = min; a <= max; ++a) {
            if (!m_used[a]) {
                m_used[a] = true;
                return a;
            }
        }
        if (attempt == 0 && !recycle_asids(min, max))
            break;
    }
    return make_unexpected(-EBUSY);
}

void SevHost::asid_free(uint32_t asid)
{
    if (asid < m_reclaim.size())
        m_reclaim[asid] = true;
}

// ---------------------------------------------------------------------------------------------
Vm::Vm(SevHost& host, KvmVmType type)
    : m_host(host)
    , m_type(type)
{
    // svm_vm_init(): VMs created with an SEV type must be initialised with KVM_SEV_INIT2.
    if (type == KVM_X86_SEV_VM || type == KVM_X86_SEV_ES_VM || type == KVM_X86_SNP_VM)
        m_sev.need_init = true;
}

Vm::~Vm()
{
    // sev_vm_destroy()
    if (!m_sev.active)
        return;
    m_enc_regions.clear();
    unbind_asid();
    m_host.asid_free(m_sev.asid);
}

void Vm::unbind_asid()
{
    // sev_unbind_asid(): DEACTIVATE then DECOMMISSION; failures are ignored, as KVM does.
    if (!m_sev.handle)
        return;
    firmware::HandleBuf h { m_sev.handle };
    (void)m_host.psp().do_cmd(CommandId::DEACTIVATE, { reinterpret_cast<uint8_t*>(&h), sizeof h });
    h.handle = m_sev.handle;
    (void)m_host.psp().do_cmd(CommandId::DECOMMISSION, { reinterpret_cast<uint8_t*>(&h), sizeof h });
    m_sev.handle = 0;
}

int Vm::set_user_memory_region(kvm_userspace_memory_region const& r)
{
    // kvm_set_memory_region() checks.
    if (r.flags & ~(KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY))
        return -EINVAL;
    if ((r.memory_size & kPageMask) || (r.guest_phys_addr & kPageMask) || (r.userspace_addr & kPageMask))
        return -EINVAL;
    if ((r.slot & 0xffff) >= KVM_USER_MEM_SLOTS)
        return -EINVAL;
    if (r.guest_phys_addr + r.memory_size < r.guest_phys_addr)
        return -EINVAL;
    if (r.memory_size == 0) {
        m_slots.erase(r.slot);
        return 0;
    }
    if (!m_host.psp().host().to_spa(Hva(r.userspace_addr), r.memory_size))
        return -EINVAL; // not accessible user memory (access_ok)
    for (auto const& [slot, s] : m_slots) {
        if (slot == r.slot)
            continue;
        if (r.guest_phys_addr < s.guest_phys_addr + s.memory_size && s.guest_phys_addr < r.guest_phys_addr + r.memory_size)
            return -EEXIST;
    }
    m_slots[r.slot] = r;
    return 0;
}

std::optional<Spa> Vm::gpa_to_spa(Gpa gpa) const
{
    for (auto const& [slot, s] : m_slots) {
        if (gpa.value >= s.guest_phys_addr && gpa.value - s.guest_phys_addr < s.memory_size)
            return m_host.psp().host().to_spa(Hva(s.userspace_addr + (gpa.value - s.guest_phys_addr)));
    }
    return std::nullopt;
}

int Vm::get_device_attr(uint32_t group, uint64_t attr, uint64_t& value) const
{
    // sev_dev_get_attr()
    if (group != KVM_X86_GRP_SEV)
        return -ENXIO;
    if (attr != KVM_X86_SEV_VMSA_FEATURES)
        return -ENXIO;
    value = m_host.config().supported_vmsa_features;
    return 0;
}

// sev_pin_memory(): every page of [uaddr, uaddr + len) must be mapped user memory.
Result<Vm::Pages, int> Vm::pin(uint64_t uaddr, uint64_t len)
{
    if (len == 0 || uaddr + len < uaddr)
        return make_unexpected(-EINVAL);
    uint64_t first = uaddr >> kPageShift, last = (uaddr + len - 1) >> kPageShift;
    Pages pages;
    for (uint64_t p = first; p <= last; ++p) {
        auto spa = m_host.psp().host().to_spa(Hva(p << kPageShift), kPageSize);
        if (!spa)
            return make_unexpected(-ENOMEM); // pin_user_pages_fast() pinned fewer pages
        pages.push_back(*spa);
    }
    return pages;
}

void Vm::clflush(Pages const& pages)
{
    // sev_clflush_pages(): nothing to do on CPUs with SME_COHERENT.
    if (m_host.config().sme_coherent)
        return;
    for (Spa p : pages)
        m_host.memory().clflush(p);
}

// psp_copy_user_blob(): the kernel copies user blobs into its own memory for the PSP.
Result<Spa, int> Vm::copy_user_blob(uint64_t uaddr, uint32_t len)
{
    if (!uaddr || !len)
        return make_unexpected(-EINVAL);
    if (len > SEV_FW_BLOB_MAX_SIZE)
        return make_unexpected(-EINVAL);
    auto& host = m_host.psp().host();
    std::vector<uint8_t> tmp(len);
    TRY(host.copy_from(Hva(uaddr), tmp));
    Spa blob = TRY(host.alloc_pages((len + kPageSize - 1) >> kPageShift));
    TRY(host.copy_to(direct_map(blob), tmp));
    return blob;
}

int Vm::copy_user_blob(UserBlob& blob, uint64_t uaddr, uint32_t len)
{
    auto r = copy_user_blob(uaddr, len);
    if (!r)
        return r.error();
    blob.spa = *r;
    blob.len = len;
    return 0;
}

void Vm::free_blob(Spa blob, uint32_t len) { m_host.psp().host().free_pages(blob, (len + kPageSize - 1) >> kPageShift); }

int Vm::issue(CommandId id, void* buf, uint32_t& error)
{
    auto r = m_host.psp().do_cmd(id, { static_cast<uint8_t*>(buf), PspDriver::buffer_length(id) });
    if (r)
        return 0;
    error = r.error().psp_ret;
    return r.error().err;
}

int Vm::memory_encrypt_op(kvm_sev_cmd& cmd)
{
    // sev_mem_enc_ioctl()
    switch (cmd.id) {
    case KVM_SEV_ES_INIT:
        if (!m_host.config().es_supported)
            return -ENOTTY;
        [[fallthrough]];
    case KVM_SEV_INIT:
        return sev_init(cmd);
    case KVM_SEV_INIT2:
        return sev_init2(cmd);
    case KVM_SEV_LAUNCH_START:
        return launch_start(cmd);
    case KVM_SEV_LAUNCH_UPDATE_DATA:
        return launch_update_data(cmd);
    case KVM_SEV_LAUNCH_MEASURE:
        return launch_measure(cmd);
    case KVM_SEV_LAUNCH_SECRET:
        return launch_secret(cmd);
    case KVM_SEV_LAUNCH_FINISH:
        return launch_finish(cmd);
    case KVM_SEV_GUEST_STATUS:
        return guest_status(cmd);
    case KVM_SEV_DBG_DECRYPT:
        return dbg_crypt(cmd, true);
    case KVM_SEV_DBG_ENCRYPT:
        return dbg_crypt(cmd, false);
    case KVM_SEV_GET_ATTESTATION_REPORT:
        return get_attestation_report(cmd);
    case KVM_SEV_LAUNCH_UPDATE_VMSA:
        return launch_update_vmsa(cmd);
    case KVM_SEV_SEND_START:
        return send_start(cmd);
    case KVM_SEV_SEND_UPDATE_DATA:
        return send_update_data(cmd);
    case KVM_SEV_SEND_FINISH:
        return send_finish(cmd);
    case KVM_SEV_SEND_CANCEL:
        return send_cancel(cmd);
    case KVM_SEV_RECEIVE_START:
        return receive_start(cmd);
    case KVM_SEV_RECEIVE_UPDATE_DATA:
        return receive_update_data(cmd);
    case KVM_SEV_RECEIVE_FINISH:
        return receive_finish(cmd);
    case KVM_SEV_SEND_UPDATE_VMSA:
        // Not in upstream KVM's sev_mem_enc_ioctl; as the SEV-ES migration series has them
        // (emulator/vmm/vm_migration.cpp, QUIRKS.md).
        return send_update_vmsa(cmd);
    case KVM_SEV_RECEIVE_UPDATE_VMSA:
        return receive_update_vmsa(cmd);
    default:
        return -EINVAL;
    }
}

// __sev_guest_init()
int Vm::guest_init(kvm_sev_cmd& cmd, kvm_sev_init data, KvmVmType vm_type)
{
    bool es_active = vm_type != KVM_X86_SEV_VM;
    bool snp_active = vm_type == KVM_X86_SNP_VM;
    uint64_t valid_vmsa_features = es_active ? m_host.config().supported_vmsa_features : 0;
    if (m_created_vcpus)
        return -EINVAL;
    if (data.flags)
        return -EINVAL;
    if (data.vmsa_features & ~valid_vmsa_features)
        return -EINVAL;
    if (data.ghcb_version > GHCB_VERSION_MAX || (!es_active && data.ghcb_version))
        return -EINVAL;
    if (es_active && !data.ghcb_version)
        data.ghcb_version = 2;
    if (snp_active)
        return -EOPNOTSUPP; // SEV-SNP is a later milestone (QUIRKS.md)
    if (m_sev.active)
        return -EINVAL;
    auto asid = m_host.asid_new(es_active);
    if (!asid)
        return asid.error();
    auto init = m_host.psp().platform_init(m_host.config().es_supported);
    if (!init) {
        cmd.error = init.error().psp_ret;
        m_host.asid_free(*asid);
        return init.error().err;
    }
    m_sev.active = true;
    m_sev.es_active = es_active;
    m_sev.vmsa_features = data.vmsa_features;
    m_sev.ghcb_version = data.ghcb_version;
    m_sev.asid = *asid;
    m_sev.need_init = false;
    return 0;
}

int Vm::sev_init(kvm_sev_cmd& cmd)
{
    // sev_guest_init(): the legacy commands work only on a default-type VM.
    if (m_type != KVM_X86_DEFAULT_VM)
        return -EINVAL;
    kvm_sev_init data {};
    KvmVmType t = cmd.id == KVM_SEV_INIT ? KVM_X86_SEV_VM : KVM_X86_SEV_ES_VM;
    if (t == KVM_X86_SEV_ES_VM)
        data.ghcb_version = GHCB_VERSION_MIN; // KVM_SEV_ES_INIT keeps the minimal GHCB protocol
    return guest_init(cmd, data, t);
}

int Vm::sev_init2(kvm_sev_cmd& cmd)
{
    if (!m_sev.need_init)
        return -EINVAL;
    if (m_type != KVM_X86_SEV_VM && m_type != KVM_X86_SEV_ES_VM && m_type != KVM_X86_SNP_VM)
        return -EINVAL;
    kvm_sev_init data {};
    if (!params_in(cmd, data))
        return -EFAULT;
    return guest_init(cmd, data, m_type);
}

int Vm::launch_start(kvm_sev_cmd& cmd)
{
    if (!m_sev.active)
        return -ENOTTY;
    kvm_sev_launch_start params {};
    if (!params_in(cmd, params))
        return -EFAULT;
    firmware::LaunchStartBuf start {};
    std::optional<Spa> dh, session;
    auto cleanup = [&] {
        if (dh)
            free_blob(*dh, params.dh_len);
        if (session)
            free_blob(*session, params.session_len);
    };
    if (params.dh_uaddr) {
        auto b = copy_user_blob(params.dh_uaddr, params.dh_len);
        if (!b)
            return b.error();
        dh = *b;
        start.dh_cert_paddr = dh->value;
        start.dh_cert_len = params.dh_len;
    }
    if (params.session_uaddr) {
        auto b = copy_user_blob(params.session_uaddr, params.session_len);
        if (!b) {
            cleanup();
            return b.error();
        }
        session = *b;
        start.session_paddr = session->value;
        start.session_len = params.session_len;
    }
    start.handle = params.handle;
    start.policy = params.policy;
    int ret = issue(CommandId::LAUNCH_START, &start, cmd.error);
    if (ret) {
        cleanup();
        return ret;
    }
    ret = adopt_context(cmd, start.handle, params);
    cleanup();
    return ret;
}

// What sev_launch_start() and sev_receive_start() do once the firmware made a context: bind it
// to this VM's ASID (sev_bind_asid: ACTIVATE; DECOMMISSION when that fails), hand the handle back
// to the VMM in its parameters (on a failed copy the context is unbound again: -EFAULT), and keep
// handle and policy.
template <class Params>
int Vm::adopt_context(kvm_sev_cmd& cmd, uint32_t handle, Params& params)
{
    firmware::ActivateBuf act { handle, m_sev.asid };
    if (int ret = issue(CommandId::ACTIVATE, &act, cmd.error)) {
        firmware::HandleBuf h { handle };
        uint32_t ignored = 0;
        (void)issue(CommandId::DECOMMISSION, &h, ignored);
        return ret;
    }
    params.handle = handle;
    m_sev.handle = handle;
    if (!params_out(cmd, params)) {
        unbind_asid();
        return -EFAULT;
    }
    m_sev.policy = params.policy;
    return 0;
}
template int Vm::adopt_context(kvm_sev_cmd&, uint32_t, kvm_sev_launch_start&);
template int Vm::adopt_context(kvm_sev_cmd&, uint32_t, kvm_sev_receive_start&);

// sev_launch_update_vmsa(): for each vCPU, sev_es_sync_vmsa() then LAUNCH_UPDATE_VMSA on its
// VMSA page (the firmware measures the plaintext and encrypts it in place with the guest's key),
// then the vCPU's state is protected. Stops at the first failure, as KVM does.
int Vm::launch_update_vmsa(kvm_sev_cmd& cmd)
{
    if (!m_sev.active || !m_sev.es_active)
        return -ENOTTY;
    for (Vcpu* v : m_vcpus) {
        if (int r = v->sync_vmsa(); r)
            return r;
        // The firmware rewrites the page with the guest's key: flush what the host wrote first
        // (clflush_cache_range in __sev_launch_update_vmsa).
        if (!m_host.config().sme_coherent)
            m_host.memory().clflush(v->vmsa_address());
        firmware::LaunchUpdateBuf data {};
        data.handle = m_sev.handle;
        data.paddr = v->vmsa_address().value;
        data.length = uint32_t(kPageSize);
        if (int r = issue(CommandId::LAUNCH_UPDATE_VMSA, &data, cmd.error); r)
            return r;
        v->set_guest_state_protected();
    }
    return 0;
}

int Vm::launch_update_data(kvm_sev_cmd& cmd)
{
    if (!m_sev.active)
        return -ENOTTY;
    kvm_sev_launch_update_data params {};
    if (!params_in(cmd, params))
        return -EFAULT;
    auto pages = pin(params.uaddr, params.len);
    if (!pages)
        return pages.error();
    clflush(*pages);
    uint64_t vaddr = params.uaddr, end = params.uaddr + params.len, size = params.len;
    size_t i = 0;
    while (vaddr < end) {
        uint64_t offset = vaddr & kPageMask;
        // get_num_contig_pages(): encrypt physically contiguous runs in one command.
        size_t run = 1;
        while (i + run < pages->size() && (*pages)[i + run - 1].value + kPageSize == (*pages)[i + run].value)
            ++run;
        uint64_t len = std::min<uint64_t>(run * kPageSize - offset, size);
        firmware::LaunchUpdateBuf data {};
        data.handle = m_sev.handle;
        data.paddr = (*pages)[i].value + offset;
        data.length = uint32_t(len);
        if (int ret = issue(CommandId::LAUNCH_UPDATE_DATA, &data, cmd.error))
            return ret;
        size -= len;
        vaddr += len;
        i += run;
    }
    return 0;
}

// sev_launch_measure() and sev_get_attestation_report() share one shape: the firmware writes
// an output blob of params.len bytes, copied to params.uaddr; params.len = 0 is a length query
// whose firmware answer (INVALID_LEN with the needed length) goes back to the caller.
template <class Params, class Buf, class SetBlob, class GetLen>
int Vm::blob_out_command(kvm_sev_cmd& cmd, CommandId id, Buf& data, SetBlob set_blob, GetLen get_len)
{
    if (!m_sev.active)
        return -ENOTTY;
    auto& host = m_host.psp().host();
    Params params {};
    if (!params_in(cmd, params))
        return -EFAULT;
    std::optional<Spa> blob;
    if (params.len && params.uaddr) {
        if (params.len > SEV_FW_BLOB_MAX_SIZE)
            return -EINVAL;
        auto b = host.alloc_pages((params.len + kPageSize - 1) >> kPageShift);
        if (!b)
            return b.error();
        blob = *b;
        set_blob(params, data, blob->value, params.len);
    }
    data.handle = m_sev.handle;
    int ret = issue(id, &data, cmd.error);
    uint32_t asked = params.len;
    if (asked) {
        if (ret) {
            if (blob)
                free_blob(*blob, asked);
            return ret;
        }
        if (blob) {
            std::vector<uint8_t> out(asked);
            if (!host.copy_from(direct_map(*blob), out) || !host.copy_to(Hva(params.uaddr), out))
                ret = -EFAULT;
        }
    }
    params.len = get_len(data);
    if (!params_out(cmd, params))
        ret = -EFAULT;
    if (blob)
        free_blob(*blob, asked);
    return ret;
}

int Vm::launch_measure(kvm_sev_cmd& cmd)
{
    firmware::LaunchMeasureBuf data {};
    return blob_out_command<kvm_sev_launch_measure>(
        cmd, CommandId::LAUNCH_MEASURE, data,
        [](kvm_sev_launch_measure const&, firmware::LaunchMeasureBuf& d, uint64_t pa, uint32_t len) {
            d.measure_paddr = pa;
            d.measure_len = len;
        },
        [](firmware::LaunchMeasureBuf const& d) { return uint32_t(d.measure_len); });
}

int Vm::launch_secret(kvm_sev_cmd& cmd)
{
    if (!m_sev.active)
        return -ENOTTY;
    kvm_sev_launch_secret params {};
    if (!params_in(cmd, params))
        return -EFAULT;
    auto pages = pin(params.guest_uaddr, params.guest_len);
    if (!pages)
        return pages.error();
    clflush(*pages);
    // The secret goes to physically contiguous memory.
    for (size_t i = 1; i < pages->size(); ++i)
        if ((*pages)[i - 1].value + kPageSize != (*pages)[i].value)
            return -EINVAL;
    firmware::TransportBuf data {};
    data.guest_paddr = (*pages)[0].value + (params.guest_uaddr & kPageMask);
    data.guest_len = params.guest_len;
    auto trans = copy_user_blob(params.trans_uaddr, params.trans_len);
    if (!trans)
        return trans.error();
    data.trans_paddr = trans->value;
    data.trans_len = params.trans_len;
    auto hdr = copy_user_blob(params.hdr_uaddr, params.hdr_len);
    if (!hdr) {
        free_blob(*trans, params.trans_len);
        return hdr.error();
    }
    data.hdr_paddr = hdr->value;
    data.hdr_len = params.hdr_len;
    data.handle = m_sev.handle;
    int ret = issue(CommandId::LAUNCH_SECRET, &data, cmd.error);
    free_blob(*hdr, params.hdr_len);
    free_blob(*trans, params.trans_len);
    return ret;
}

int Vm::launch_finish(kvm_sev_cmd& cmd)
{
    if (!m_sev.active)
        return -ENOTTY;
    firmware::HandleBuf data { m_sev.handle };
    return issue(CommandId::LAUNCH_FINISH, &data, cmd.error);
}

int Vm::guest_status(kvm_sev_cmd& cmd)
{
    if (!m_sev.active)
        return -ENOTTY;
    firmware::GuestStatusBuf data {};
    data.handle = m_sev.handle;
    if (int ret = issue(CommandId::GUEST_STATUS, &data, cmd.error))
        return ret;
    kvm_sev_guest_status params { data.handle, data.policy, data.state };
    if (!params_out(cmd, params))
        return -EFAULT;
    return 0;
}

// __sev_dbg_decrypt_user(): unaligned requests go through a bounce page.
int Vm::dbg_decrypt_user(Spa src, uint64_t dst_uaddr, Spa dst, uint32_t size, uint32_t& error)
{
    auto& host = m_host.psp().host();
    std::optional<Spa> bounce;
    if (!aligned16(dst.value) || !aligned16(src.value) || !aligned16(size)) {
        auto b = host.alloc_pages(1);
        if (!b)
            return b.error();
        bounce = *b;
        dst = *bounce;
    }
    uint64_t offset = src.value & 15;
    firmware::DebugBuf data {};
    data.handle = m_sev.handle;
    data.src_paddr = round_down16(src.value);
    data.dst_paddr = dst.value;
    data.length = uint32_t(round_up16(size + offset));
    int ret = issue(CommandId::DBG_DECRYPT, &data, error);
    if (!ret && bounce) {
        std::vector<uint8_t> tmp(size);
        if (!host.copy_from(direct_map(*bounce) + offset, tmp) || !host.copy_to(Hva(dst_uaddr), tmp))
            ret = -EFAULT;
    }
    if (bounce)
        host.free_pages(*bounce, 1);
    return ret;
}

// __sev_dbg_encrypt_user(): an unaligned source goes through a bounce page; an unaligned
// destination or length is read-modify-write (decrypt, patch, encrypt).
int Vm::dbg_encrypt_user(Spa src, uint64_t src_uaddr, Spa dst, uint64_t dst_uaddr, uint32_t size, uint32_t& error)
{
    auto& host = m_host.psp().host();
    std::optional<Spa> src_page, dst_page;
    auto release = [&] {
        if (src_page)
            host.free_pages(*src_page, 1);
        if (dst_page)
            host.free_pages(*dst_page, 1);
    };
    uint32_t len = size;
    std::vector<uint8_t> data_bytes(size);
    if (!aligned16(src_uaddr)) {
        auto b = host.alloc_pages(1);
        if (!b)
            return b.error();
        src_page = *b;
        if (!host.copy_from(Hva(src_uaddr), data_bytes) || !host.copy_to(direct_map(*src_page), data_bytes)) {
            release();
            return -EFAULT;
        }
        src = *src_page;
    }
    if (!aligned16(dst_uaddr) || !aligned16(size)) {
        auto b = host.alloc_pages(1);
        if (!b) {
            release();
            return b.error();
        }
        dst_page = *b;
        firmware::DebugBuf dec {};
        dec.handle = m_sev.handle;
        dec.src_paddr = round_down16(dst.value);
        dec.dst_paddr = dst_page->value;
        dec.length = uint32_t(round_up16(size + (dst.value & 15)));
        if (int ret = issue(CommandId::DBG_DECRYPT, &dec, error)) {
            release();
            return ret;
        }
        uint64_t dst_offset = dst.value & 15;
        if (!host.copy_from(src_page ? direct_map(*src_page) : Hva(src_uaddr), data_bytes)
            || !host.copy_to(direct_map(*dst_page) + dst_offset, data_bytes)) {
            release();
            return -EFAULT;
        }
        src = *dst_page;
        dst = Spa(round_down16(dst.value));
        len = uint32_t(round_up16(size + dst_offset));
    }
    firmware::DebugBuf enc {};
    enc.handle = m_sev.handle;
    enc.src_paddr = src.value;
    enc.dst_paddr = dst.value;
    enc.length = len;
    int ret = issue(CommandId::DBG_ENCRYPT, &enc, error);
    release();
    return ret;
}

int Vm::dbg_crypt(kvm_sev_cmd& cmd, bool decrypt)
{
    if (!m_sev.active)
        return -ENOTTY;
    kvm_sev_dbg debug {};
    if (!params_in(cmd, debug))
        return -EFAULT;
    if (!debug.len || debug.src_uaddr + debug.len < debug.src_uaddr)
        return -EINVAL;
    if (!debug.dst_uaddr)
        return -EINVAL;
    uint64_t vaddr = debug.src_uaddr, end = debug.src_uaddr + debug.len, dst_vaddr = debug.dst_uaddr;
    uint64_t size = debug.len;
    while (vaddr < end) {
        auto src_p = pin(vaddr & ~kPageMask, kPageSize);
        if (!src_p)
            return src_p.error();
        auto dst_p = pin(dst_vaddr & ~kPageMask, kPageSize);
        if (!dst_p)
            return dst_p.error();
        clflush(*src_p);
        clflush(*dst_p);
        uint64_t s_off = vaddr & kPageMask, d_off = dst_vaddr & kPageMask;
        uint32_t len = uint32_t(std::min<uint64_t>(kPageSize - s_off, size));
        int ret = decrypt ? dbg_decrypt_user((*src_p)[0] + s_off, dst_vaddr, (*dst_p)[0] + d_off, len, cmd.error)
                          : dbg_encrypt_user((*src_p)[0] + s_off, vaddr, (*dst_p)[0] + d_off, dst_vaddr, len, cmd.error);
        if (ret)
            return ret;
        vaddr += len;
        dst_vaddr += len;
        size -= len;
    }
    return 0;
}

int Vm::get_attestation_report(kvm_sev_cmd& cmd)
{
    firmware::AttestationBuf data {};
    return blob_out_command<kvm_sev_attestation_report>(
        cmd, CommandId::ATTESTATION, data,
        [](kvm_sev_attestation_report const& p, firmware::AttestationBuf& d, uint64_t pa, uint32_t len) {
            d.paddr = pa;
            d.length = len;
            std::memcpy(d.mnonce, p.mnonce, sizeof d.mnonce);
        },
        [](firmware::AttestationBuf const& d) { return uint32_t(d.length); });
}

int Vm::memory_encrypt_reg_region(kvm_enc_region const& range)
{
    // sev_mem_enc_register_region()
    if (!m_sev.active)
        return -ENOTTY;
    auto pages = pin(range.addr, range.size);
    if (!pages)
        return pages.error();
    clflush(*pages);
    m_enc_regions.push_back(range);
    return 0;
}

int Vm::memory_encrypt_unreg_region(kvm_enc_region const& range)
{
    // sev_mem_enc_unregister_region()
    if (!m_sev.active)
        return -ENOTTY;
    auto it = std::find_if(m_enc_regions.begin(), m_enc_regions.end(),
        [&](kvm_enc_region const& r) { return r.addr == range.addr && r.size == range.size; });
    if (it == m_enc_regions.end())
        return -EINVAL;
    // sev_writeback_caches(): write back guest-tagged lines before the pages go back.
    m_host.memory().flush_key(mmu::KeyId::slot(m_sev.asid));
    m_enc_regions.erase(it);
    return 0;
}

} // namespace sevemu::vmm
