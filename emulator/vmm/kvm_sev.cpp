// Layout checks of kvm_sev.h against the system's <linux/kvm.h>, where it has the structures
// (Debian 12's linux-libc-dev 6.1 has all but kvm_sev_init, added in Linux 6.10).
#include "emulator/vmm/kvm_sev.h"

#if __has_include(<linux/kvm.h>)
#include <linux/kvm.h>

#define SEVEMU_SAME(T, f) \
    static_assert(offsetof(::T, f) == offsetof(sevemu::vmm::T, f) && sizeof(::T) == sizeof(sevemu::vmm::T), #T "." #f)

SEVEMU_SAME(kvm_sev_cmd, id);
SEVEMU_SAME(kvm_sev_cmd, data);
SEVEMU_SAME(kvm_sev_cmd, error);
SEVEMU_SAME(kvm_sev_cmd, sev_fd);
SEVEMU_SAME(kvm_sev_launch_start, dh_uaddr);
SEVEMU_SAME(kvm_sev_launch_start, session_uaddr);
SEVEMU_SAME(kvm_sev_launch_start, session_len);
SEVEMU_SAME(kvm_sev_launch_update_data, len);
SEVEMU_SAME(kvm_sev_launch_secret, guest_uaddr);
SEVEMU_SAME(kvm_sev_launch_secret, trans_uaddr);
SEVEMU_SAME(kvm_sev_launch_secret, trans_len);
SEVEMU_SAME(kvm_sev_launch_measure, len);
SEVEMU_SAME(kvm_sev_guest_status, state);
SEVEMU_SAME(kvm_sev_dbg, dst_uaddr);
SEVEMU_SAME(kvm_sev_dbg, len);
SEVEMU_SAME(kvm_sev_attestation_report, uaddr);
SEVEMU_SAME(kvm_sev_attestation_report, len);
SEVEMU_SAME(kvm_sev_send_start, pdh_cert_uaddr);
SEVEMU_SAME(kvm_sev_send_start, plat_certs_len);
SEVEMU_SAME(kvm_sev_send_start, amd_certs_uaddr);
SEVEMU_SAME(kvm_sev_send_start, session_uaddr);
SEVEMU_SAME(kvm_sev_send_start, session_len);
SEVEMU_SAME(kvm_sev_send_update_data, guest_uaddr);
SEVEMU_SAME(kvm_sev_send_update_data, trans_len);
SEVEMU_SAME(kvm_sev_receive_start, pdh_uaddr);
SEVEMU_SAME(kvm_sev_receive_start, session_len);
SEVEMU_SAME(kvm_sev_receive_update_data, guest_uaddr);
SEVEMU_SAME(kvm_sev_receive_update_data, trans_len);
static_assert(int(KVM_SEV_RECEIVE_FINISH) == int(sevemu::vmm::KVM_SEV_RECEIVE_FINISH));
SEVEMU_SAME(kvm_enc_region, size);
SEVEMU_SAME(kvm_userspace_memory_region, userspace_addr);
static_assert(int(KVM_SEV_GET_ATTESTATION_REPORT) == int(sevemu::vmm::KVM_SEV_GET_ATTESTATION_REPORT));
static_assert(int(KVM_SEV_DBG_ENCRYPT) == int(sevemu::vmm::KVM_SEV_DBG_ENCRYPT));
static_assert(int(KVM_SEV_SEND_CANCEL) == int(sevemu::vmm::KVM_SEV_SEND_CANCEL));
#endif
