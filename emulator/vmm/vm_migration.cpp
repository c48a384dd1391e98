// The KVM SEV live-migration commands, each checked in the order Linux arch/x86/kvm/svm/sev.c
// checks them (sev_send_start, sev_send_update_data, sev_send_finish, sev_send_cancel,
// sev_receive_start, sev_receive_update_data, sev_receive_finish; uapi structures from
// include/uapi/linux/kvm.h, documented in Documentation/virt/kvm/x86/amd-memory-encryption.rst).
//
// The conventions userspace (QEMU's migration patches) relies on:
//   - KVM_SEV_SEND_START with session_len = 0 asks for the session length: the firmware answers
//     INVALID_LEN with the length, the ioctl returns -EIO with that status in kvm_sev_cmd::error
//     and the length in the structure;
//   - KVM_SEV_SEND_UPDATE_DATA with hdr_len = 0 or trans_len = 0 asks for both lengths the same
//     way (the firmware reports hdr_len only; trans_len comes back as the firmware left it, 0);
//   - one SEND/RECEIVE_UPDATE_DATA moves at most one page and may not cross a page boundary;
//   - KVM_SEV_RECEIVE_START creates the context and binds this VM's ASID to it (ACTIVATE), as
//     LAUNCH_START does;
//   - KVM_SEV_SEND_UPDATE_VMSA / KVM_SEV_RECEIVE_UPDATE_VMSA (SEV-ES only; upstream KVM has no
//     handler, these follow the out-of-tree SEV-ES migration series, QUIRKS.md) move one vCPU's
//     VMSA page, named by its vCPU id: the same header and packet buffers and the same length
//     query as SEND_UPDATE_DATA; the source's vCPU must be protected (launched), the target's
//     not yet (a VMSA is received once), and RECEIVE_UPDATE_VMSA makes it protected: it runs
//     from the received VMSA from then on.
#include "emulator/vmm/vcpu.h"
#include "emulator/vmm/vm.h"

#include <array>
#include <cerrno>
#include <vector>

namespace sevemu::vmm {

using firmware::CommandId;

namespace {

// A kernel buffer (kzalloc): host pages, zeroed so nothing stale reaches the firmware or the user.
struct KernelBuffer {
    HostMemory* host {};
    Spa spa {};
    uint64_t pages {};
    ~KernelBuffer()
    {
        if (host && pages)
            host->free_pages(spa, pages);
    }
};

Result<void, int> kzalloc(HostMemory& host, uint32_t len, KernelBuffer& out)
{
    // kzalloc() of more than the page allocator's largest order fails.
    constexpr uint32_t kMaxKmalloc = 4u << 20;
    if (len == 0 || len > kMaxKmalloc)
        return make_unexpected(-ENOMEM);
    uint64_t pages = (uint64_t(len) + kPageSize - 1) >> kPageShift;
    auto spa = host.alloc_pages(pages);
    if (!spa)
        return make_unexpected(-ENOMEM);
    // HostMemory::alloc_pages hands out zeroed pages already (__GFP_ZERO).
    out.host = &host;
    out.spa = *spa;
    out.pages = pages;
    return {};
}

// copy_to_user() of `len` bytes of a kernel buffer.
int copy_buffer_to_user(HostMemory& host, Spa from, uint64_t uaddr, uint32_t len)
{
    // Page-sized packets (every SEND_UPDATE_DATA) go through the stack.
    std::array<uint8_t, kPageSize> page;
    std::vector<uint8_t> big;
    std::span<uint8_t> tmp(page.data(), len);
    if (len > page.size()) {
        big.resize(len);
        tmp = big;
    }
    if (!host.copy_from(direct_map(from), tmp) || !host.copy_to(Hva(uaddr), tmp))
        return -EFAULT;
    return 0;
}

} // namespace

// __sev_send_start_query_session_length()
int Vm::send_start_query_session_length(kvm_sev_cmd& cmd, kvm_sev_send_start& params)
{
    firmware::SendStartBuf data {};
    data.handle = m_sev.handle;
    int ret = issue(CommandId::SEND_START, &data, cmd.error);
    params.session_len = data.session_len;
    if (!params_out(cmd, params))
        ret = -EFAULT;
    return ret;
}

// sev_send_start()
int Vm::send_start(kvm_sev_cmd& cmd)
{
    if (!m_sev.active)
        return -ENOTTY;
    auto& host = m_host.psp().host();
    kvm_sev_send_start params {};
    if (!params_in(cmd, params))
        return -EFAULT;
    if (!params.session_len)
        return send_start_query_session_length(cmd, params);
    if (!params.pdh_cert_uaddr || !params.pdh_cert_len || !params.session_uaddr || params.session_len > SEV_FW_BLOB_MAX_SIZE)
        return -EINVAL;

    KernelBuffer session;
    if (auto r = kzalloc(host, params.session_len, session); !r)
        return r.error();
    UserBlob pdh(*this), plat(*this), amd(*this);
    if (int r = copy_user_blob(pdh, params.pdh_cert_uaddr, params.pdh_cert_len))
        return r;
    if (int r = copy_user_blob(plat, params.plat_certs_uaddr, params.plat_certs_len))
        return r;
    if (int r = copy_user_blob(amd, params.amd_certs_uaddr, params.amd_certs_len))
        return r;

    firmware::SendStartBuf data {};
    data.pdh_cert_paddr = pdh.spa->value;
    data.pdh_cert_len = params.pdh_cert_len;
    data.plat_certs_paddr = plat.spa->value;
    data.plat_certs_len = params.plat_certs_len;
    data.amd_certs_paddr = amd.spa->value;
    data.amd_certs_len = params.amd_certs_len;
    data.session_paddr = session.spa.value;
    data.session_len = params.session_len;
    data.handle = m_sev.handle;
    int ret = issue(CommandId::SEND_START, &data, cmd.error);
    if (!ret && copy_buffer_to_user(host, session.spa, params.session_uaddr, params.session_len))
        return -EFAULT;
    params.policy = data.policy;
    params.session_len = data.session_len;
    if (!params_out(cmd, params))
        ret = -EFAULT;
    return ret;
}

// __sev_send_update_data_query_lengths(): the firmware's header and transport lengths for
// SEND_UPDATE_DATA or SEND_UPDATE_VMSA (`Params`: the op's struct), answered into the user struct.
template <class Params>
int Vm::send_query_lengths(kvm_sev_cmd& cmd, CommandId id, Params& params)
{
    firmware::TransportBuf data {};
    data.handle = m_sev.handle;
    int ret = issue(id, &data, cmd.error);
    params.hdr_len = data.hdr_len;
    params.trans_len = data.trans_len;
    if (!params_out(cmd, params))
        ret = -EFAULT;
    return ret;
}

// sev_send_update_data(): one guest page (or part of one) out through the firmware, re-encrypted
// under the transport key; the packet and its header go back to userspace.
int Vm::send_update_data(kvm_sev_cmd& cmd)
{
    if (!m_sev.active)
        return -ENOTTY;
    auto& host = m_host.psp().host();
    kvm_sev_send_update_data params {};
    if (!params_in(cmd, params))
        return -EFAULT;
    if (!params.trans_len || !params.hdr_len)
        return send_query_lengths(cmd, CommandId::SEND_UPDATE_DATA, params);
    if (!params.trans_uaddr || !params.guest_uaddr || !params.guest_len || !params.hdr_uaddr)
        return -EINVAL;
    uint64_t offset = params.guest_uaddr & kPageMask;
    if (params.guest_len > kPageSize || params.guest_len + offset > kPageSize)
        return -EINVAL;
    auto pages = pin(params.guest_uaddr & ~kPageMask, kPageSize);
    if (!pages)
        return pages.error();
    KernelBuffer hdr, trans;
    if (auto r = kzalloc(host, params.hdr_len, hdr); !r)
        return r.error();
    if (auto r = kzalloc(host, params.trans_len, trans); !r)
        return r.error();

    firmware::TransportBuf data {};
    data.hdr_paddr = hdr.spa.value;
    data.hdr_len = params.hdr_len;
    data.trans_paddr = trans.spa.value;
    data.trans_len = params.trans_len;
    // KVM sets the C-bit (sev_me_mask) on guest_address; sevemu's firmware masks it either way.
    data.guest_paddr = (*pages)[0].value + offset;
    data.guest_len = params.guest_len;
    data.handle = m_sev.handle;
    if (int ret = issue(CommandId::SEND_UPDATE_DATA, &data, cmd.error))
        return ret;
    if (int ret = copy_buffer_to_user(host, trans.spa, params.trans_uaddr, params.trans_len))
        return ret;
    return copy_buffer_to_user(host, hdr.spa, params.hdr_uaddr, params.hdr_len);
}

Vcpu* Vm::find_vcpu(uint32_t id) const
{
    for (Vcpu* v : m_vcpus)
        if (v->id() == id)
            return v;
    return nullptr;
}

// SEND_UPDATE_VMSA: the vCPU's encrypted VMSA page out through the firmware (SEV API 55766
// SEND_UPDATE_VMSA; AMD-ASPFW sev_mcmd.c sev_mcmd_send_update), re-encrypted under the
// transport key. The VMM calls it after the vCPU stopped for good (stop-and-copy).
int Vm::send_update_vmsa(kvm_sev_cmd& cmd)
{
    if (!m_sev.active)
        return -ENOTTY;
    if (!m_sev.es_active)
        return -EINVAL;
    auto& host = m_host.psp().host();
    kvm_sev_send_update_vmsa params {};
    if (!params_in(cmd, params))
        return -EFAULT;
    Vcpu* v = find_vcpu(params.vcpu_id);
    if (!v)
        return -EINVAL;
    if (!params.trans_len || !params.hdr_len)
        return send_query_lengths(cmd, CommandId::SEND_UPDATE_VMSA, params);
    // Only a launched VMSA is the guest's (before LAUNCH_UPDATE_VMSA the page holds nothing).
    if (!v->guest_state_protected())
        return -EINVAL;
    if (!params.trans_uaddr || !params.hdr_uaddr || params.trans_len < kPageSize)
        return -EINVAL;
    KernelBuffer hdr, trans;
    if (auto r = kzalloc(host, params.hdr_len, hdr); !r)
        return r.error();
    if (auto r = kzalloc(host, uint32_t(kPageSize), trans); !r)
        return r.error();
    firmware::TransportBuf data {};
    data.hdr_paddr = hdr.spa.value;
    data.hdr_len = params.hdr_len;
    data.trans_paddr = trans.spa.value;
    data.trans_len = uint32_t(kPageSize);
    data.guest_paddr = v->vmsa_address().value;
    data.guest_len = uint32_t(kPageSize);
    data.handle = m_sev.handle;
    if (int ret = issue(CommandId::SEND_UPDATE_VMSA, &data, cmd.error))
        return ret;
    if (int ret = copy_buffer_to_user(host, trans.spa, params.trans_uaddr, uint32_t(kPageSize)))
        return ret;
    params.trans_len = uint32_t(kPageSize);
    params.hdr_len = data.hdr_len;
    if (!params_out(cmd, params))
        return -EFAULT;
    return copy_buffer_to_user(host, hdr.spa, params.hdr_uaddr, data.hdr_len);
}

// RECEIVE_UPDATE_VMSA: the packet into the vCPU's VMSA page under the guest's key, after the
// firmware checked its MAC (BAD_MEASUREMENT otherwise: the page and the vCPU stay as they were).
int Vm::receive_update_vmsa(kvm_sev_cmd& cmd)
{
    if (!m_sev.active || !m_sev.es_active)
        return -EINVAL;
    kvm_sev_receive_update_vmsa params {};
    if (!params_in(cmd, params))
        return -EFAULT;
    Vcpu* v = find_vcpu(params.vcpu_id);
    if (!v || v->guest_state_protected())
        return -EINVAL;
    if (!params.hdr_uaddr || !params.hdr_len || !params.trans_uaddr || params.trans_len != kPageSize)
        return -EINVAL;
    UserBlob hdr(*this), trans(*this);
    if (int r = copy_user_blob(hdr, params.hdr_uaddr, params.hdr_len))
        return r;
    if (int r = copy_user_blob(trans, params.trans_uaddr, params.trans_len))
        return r;
    // The firmware writes the page with the guest's key: nothing the host cached of it may be
    // written back over it later (as __sev_launch_update_vmsa flushes before LAUNCH_UPDATE_VMSA).
    if (!m_host.config().sme_coherent)
        m_host.memory().clflush(v->vmsa_address());
    firmware::TransportBuf data {};
    data.hdr_paddr = hdr.spa->value;
    data.hdr_len = params.hdr_len;
    data.trans_paddr = trans.spa->value;
    data.trans_len = params.trans_len;
    data.guest_paddr = v->vmsa_address().value;
    data.guest_len = uint32_t(kPageSize);
    data.handle = m_sev.handle;
    int ret = issue(CommandId::RECEIVE_UPDATE_VMSA, &data, cmd.error);
    if (!ret)
        v->set_guest_state_protected();
    return ret;
}

// sev_send_finish()
int Vm::send_finish(kvm_sev_cmd& cmd)
{
    if (!m_sev.active)
        return -ENOTTY;
    firmware::HandleBuf data { m_sev.handle };
    return issue(CommandId::SEND_FINISH, &data, cmd.error);
}

// sev_send_cancel()
int Vm::send_cancel(kvm_sev_cmd& cmd)
{
    if (!m_sev.active)
        return -ENOTTY;
    firmware::HandleBuf data { m_sev.handle };
    return issue(CommandId::SEND_CANCEL, &data, cmd.error);
}

// sev_receive_start(): the target's context, from the sender's PDH and SEND_START's session,
// bound to this VM's ASID.
int Vm::receive_start(kvm_sev_cmd& cmd)
{
    if (!m_sev.active)
        return -ENOTTY;
    kvm_sev_receive_start params {};
    if (!params_in(cmd, params))
        return -EFAULT;
    if (!params.pdh_uaddr || !params.pdh_len || !params.session_uaddr || !params.session_len)
        return -EINVAL;
    UserBlob pdh(*this), session(*this);
    if (int r = copy_user_blob(pdh, params.pdh_uaddr, params.pdh_len))
        return r;
    if (int r = copy_user_blob(session, params.session_uaddr, params.session_len))
        return r;
    firmware::LaunchStartBuf start {};
    start.handle = params.handle;
    start.policy = params.policy;
    start.dh_cert_paddr = pdh.spa->value;
    start.dh_cert_len = params.pdh_len;
    start.session_paddr = session.spa->value;
    start.session_len = params.session_len;
    if (int ret = issue(CommandId::RECEIVE_START, &start, cmd.error))
        return ret;
    return adopt_context(cmd, start.handle, params); // sev_bind_asid(), as LAUNCH_START
}

// sev_receive_update_data(): one packet in; the firmware checks its MAC before it writes the
// page under this VM's key.
int Vm::receive_update_data(kvm_sev_cmd& cmd)
{
    if (!m_sev.active)
        return -EINVAL; // sic: KVM answers -EINVAL here, -ENOTTY elsewhere
    kvm_sev_receive_update_data params {};
    if (!params_in(cmd, params))
        return -EFAULT;
    if (!params.hdr_uaddr || !params.hdr_len || !params.guest_uaddr || !params.guest_len || !params.trans_uaddr
        || !params.trans_len)
        return -EINVAL;
    uint64_t offset = params.guest_uaddr & kPageMask;
    if (params.guest_len > kPageSize || params.guest_len + offset > kPageSize)
        return -EINVAL;
    UserBlob hdr(*this), trans(*this);
    if (int r = copy_user_blob(hdr, params.hdr_uaddr, params.hdr_len))
        return r;
    if (int r = copy_user_blob(trans, params.trans_uaddr, params.trans_len))
        return r;
    auto pages = pin(params.guest_uaddr & ~kPageMask, kPageSize);
    if (!pages)
        return pages.error();
    // On non-coherent CPUs the cache may hold dirty plaintext lines of the page the firmware is
    // about to write under the guest's key.
    clflush(*pages);
    firmware::TransportBuf data {};
    data.hdr_paddr = hdr.spa->value;
    data.hdr_len = params.hdr_len;
    data.trans_paddr = trans.spa->value;
    data.trans_len = params.trans_len;
    data.guest_paddr = (*pages)[0].value + offset;
    data.guest_len = params.guest_len;
    data.handle = m_sev.handle;
    return issue(CommandId::RECEIVE_UPDATE_DATA, &data, cmd.error);
}

// sev_receive_finish()
int Vm::receive_finish(kvm_sev_cmd& cmd)
{
    if (!m_sev.active)
        return -ENOTTY;
    firmware::HandleBuf data { m_sev.handle };
    return issue(CommandId::RECEIVE_FINISH, &data, cmd.error);
}

} // namespace sevemu::vmm
