// The KVM SEV migration commands as a VMM (QEMU's SEV migration patches) drives them, between
// two independent hosts (two DRAMs, two AMD-SPs, two platform directories): KVM_SEV_SEND_START
// and KVM_SEV_SEND_UPDATE_DATA with their zero-length queries, KVM_SEV_SEND_FINISH/CANCEL,
// KVM_SEV_RECEIVE_START/UPDATE_DATA/FINISH (Linux arch/x86/kvm/svm/sev.c), and the errno /
// firmware-status conventions of each; for SEV-ES, KVM_SEV_SEND_UPDATE_VMSA and
// KVM_SEV_RECEIVE_UPDATE_VMSA per vCPU (the out-of-tree SEV-ES migration series' ops, QUIRKS.md).
#include "emulator/vmm/vcpu.h"
#include "tests/emulator/vmm/vmm_harness.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>

using namespace sevemu;
using namespace sevemu::vmm;
using namespace sevemu::test;
namespace fw = sevemu::firmware;

namespace {

constexpr uint32_t kPages = 3;

struct TempPlatform {
    std::filesystem::path dir;
    TempPlatform()
    {
        std::string tmpl = (std::filesystem::temp_directory_path() / "sevemu-vmm-mig-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        dir = tmpl;
    }
    ~TempPlatform()
    {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
};

// A VM with KVM_SEV_INIT done (KVM_SEV_INIT2 on a KVM_X86_SEV_ES_VM with `es`) and `pages` of
// RAM in slot 0 at GPA 0.
struct GuestVm {
    Host& h;
    Vm vm;
    Spa ram {};
    std::vector<std::unique_ptr<Vcpu>> vcpus;
    GuestVm(Host& host, bool es = false)
        : h(host)
        , vm(*host.sev, es ? KVM_X86_SEV_ES_VM : KVM_X86_DEFAULT_VM)
    {
        if (es)
            REQUIRE(op(vm, KVM_SEV_INIT2, h.user_struct(kvm_sev_init {})) == 0);
        else
            REQUIRE(op(vm, KVM_SEV_INIT, Hva(0)) == 0);
        auto r = h.host->alloc_pages(kPages);
        REQUIRE(r.has_value());
        ram = *r;
        kvm_userspace_memory_region region { 0, 0, 0, kPages * kPageSize, direct_map(ram).value };
        REQUIRE(vm.set_user_memory_region(region) == 0);
    }
    uint64_t uaddr(uint32_t page) const { return direct_map(ram).value + page * kPageSize; }
    // A vCPU (KVM_CREATE_VCPU); for SEV-ES its staging registers hold recognisable values.
    Vcpu& add_vcpu()
    {
        auto v = Vcpu::create(vm, uint32_t(vcpus.size()));
        REQUIRE(v.has_value());
        vcpus.push_back(std::move(*v));
        Vcpu& vc = *vcpus.back();
        vc.state().rip = 0x5EC0DE000 + vcpus.size();
        vc.gprs()[3] = 0xB0B0B0B0B0B0B0B0ull + vcpus.size(); // RBX
        return vc;
    }
    Bytes vmsa(Vcpu const& v, bool plaintext) const
    {
        Bytes b(kPageSize);
        REQUIRE(h.mc->read(v.vmsa_address(), b, plaintext ? mmu::KeyId::slot(vm.sev().asid) : mmu::KeyId::none()).has_value());
        return b;
    }
    Bytes plaintext() const
    {
        Bytes b(kPages * kPageSize);
        REQUIRE(h.mc->read(ram, b, mmu::KeyId::slot(vm.sev().asid)).has_value());
        return b;
    }
    Bytes raw() const
    {
        Bytes b(kPages * kPageSize);
        REQUIRE(h.mc->read(ram, b, mmu::KeyId::none()).has_value());
        return b;
    }
    uint32_t state()
    {
        kvm_sev_guest_status gs {};
        Hva at = h.user_struct(gs);
        REQUIRE(op(vm, KVM_SEV_GUEST_STATUS, at) == 0);
        return h.read_struct<kvm_sev_guest_status>(at).state;
    }
};

// A RUNNING SEV guest holding `image` (LAUNCH_START without a session, policy `policy`).
void launch(GuestVm& g, Bytes const& image, uint32_t policy)
{
    kvm_sev_launch_start start {};
    start.policy = policy;
    REQUIRE(op(g.vm, KVM_SEV_LAUNCH_START, g.h.user_struct(start)) == 0);
    REQUIRE(g.h.host->copy_to(direct_map(g.ram), image).has_value());
    kvm_sev_launch_update_data upd { g.uaddr(0), uint32_t(image.size()) };
    REQUIRE(op(g.vm, KVM_SEV_LAUNCH_UPDATE_DATA, g.h.user_struct(upd)) == 0);
    if (g.vm.sev().es_active)
        REQUIRE(op(g.vm, KVM_SEV_LAUNCH_UPDATE_VMSA, Hva(0)) == 0);
    Hva m = g.h.user_buffer({}, 48);
    kvm_sev_launch_measure measure { m.value, 48 };
    REQUIRE(op(g.vm, KVM_SEV_LAUNCH_MEASURE, g.h.user_struct(measure)) == 0);
    REQUIRE(op(g.vm, KVM_SEV_LAUNCH_FINISH, Hva(0)) == 0);
    REQUIRE(g.plaintext() == image);
}

struct Packet {
    Bytes hdr, trans;
};

Bytes export_chain(Host& h)
{
    auto pdh = h.host->alloc_pages(1);
    auto chain = h.host->alloc_pages(2);
    REQUIRE((pdh && chain));
    fw::PdhCertExportBuf b {};
    b.pdh_cert_paddr = pdh->value;
    b.pdh_cert_length = 0x824;
    b.certs_paddr = chain->value;
    b.certs_length = 3 * 0x824;
    REQUIRE(h.psp->do_cmd(fw::CommandId::PDH_CERT_EXPORT, { reinterpret_cast<uint8_t*>(&b), sizeof b }).has_value());
    return h.read_user(direct_map(*chain), 3 * 0x824);
}

// KVM_SEV_SEND_START toward `target`, as QEMU does it: the length query, then the real call.
Bytes send_start(GuestVm& src, Host& target, uint32_t expect_policy)
{
    Host& h = src.h;
    uint32_t error = 0;
    kvm_sev_send_start q {};
    Hva q_at = h.user_struct(q);
    CHECK(op(src.vm, KVM_SEV_SEND_START, q_at, &error) == -EIO);
    CHECK(error == uint32_t(fw::Status::INVALID_LEN));
    uint32_t session_len = h.read_struct<kvm_sev_send_start>(q_at).session_len;
    REQUIRE(session_len == 0x80);

    Bytes pdh = target.export_pdh(), plat = export_chain(target), amd(1664, 0);
    Hva pdh_at = h.user_buffer(pdh), plat_at = h.user_buffer(plat), amd_at = h.user_buffer(amd);
    Hva session_at = h.user_buffer({}, session_len);
    kvm_sev_send_start s {};
    s.pdh_cert_uaddr = pdh_at.value;
    s.pdh_cert_len = uint32_t(pdh.size());
    s.plat_certs_uaddr = plat_at.value;
    s.plat_certs_len = uint32_t(plat.size());
    s.amd_certs_uaddr = amd_at.value;
    s.amd_certs_len = uint32_t(amd.size());
    s.session_uaddr = session_at.value;
    s.session_len = session_len;
    Hva s_at = h.user_struct(s);
    REQUIRE(op(src.vm, KVM_SEV_SEND_START, s_at, &error) == 0);
    CHECK(h.read_struct<kvm_sev_send_start>(s_at).policy == expect_policy);
    return h.read_user(session_at, session_len);
}

Packet send_page(GuestVm& src, uint32_t page)
{
    Host& h = src.h;
    uint32_t error = 0;
    kvm_sev_send_update_data q {};
    Hva q_at = h.user_struct(q);
    CHECK(op(src.vm, KVM_SEV_SEND_UPDATE_DATA, q_at, &error) == -EIO);
    CHECK(error == uint32_t(fw::Status::INVALID_LEN));
    uint32_t hdr_len = h.read_struct<kvm_sev_send_update_data>(q_at).hdr_len;
    REQUIRE(hdr_len == 0x34);
    Hva hdr = h.user_buffer({}, hdr_len), trans = h.user_buffer({}, kPageSize);
    kvm_sev_send_update_data u { hdr.value, hdr_len, src.uaddr(page), uint32_t(kPageSize), trans.value, uint32_t(kPageSize) };
    REQUIRE(op(src.vm, KVM_SEV_SEND_UPDATE_DATA, h.user_struct(u), &error) == 0);
    return { h.read_user(hdr, hdr_len), h.read_user(trans, kPageSize) };
}

int receive_page(GuestVm& dst, uint32_t page, Packet const& pk, uint32_t* error = nullptr)
{
    Host& h = dst.h;
    Hva hdr = h.user_buffer(pk.hdr), trans = h.user_buffer(pk.trans);
    kvm_sev_receive_update_data r { hdr.value, uint32_t(pk.hdr.size()), dst.uaddr(page), uint32_t(pk.trans.size()), trans.value,
        uint32_t(pk.trans.size()) };
    return op(dst.vm, KVM_SEV_RECEIVE_UPDATE_DATA, h.user_struct(r), error);
}

int receive_start(GuestVm& dst, Bytes const& sender_pdh, Bytes const& session, uint32_t policy, uint32_t* error = nullptr)
{
    Host& h = dst.h;
    Hva pdh = h.user_buffer(sender_pdh), blob = h.user_buffer(session);
    kvm_sev_receive_start r { 0, policy, pdh.value, uint32_t(sender_pdh.size()), blob.value, uint32_t(session.size()) };
    Hva at = h.user_struct(r);
    int ret = op(dst.vm, KVM_SEV_RECEIVE_START, at, error);
    if (ret == 0)
        CHECK(h.read_struct<kvm_sev_receive_start>(at).handle == dst.vm.sev().handle);
    return ret;
}

// KVM_SEV_SEND_UPDATE_VMSA of vCPU `id`, as a VMM does it: the length query, then the call.
Packet send_vmsa(GuestVm& src, uint32_t id)
{
    Host& h = src.h;
    uint32_t error = 0;
    kvm_sev_send_update_vmsa q { id, 0, 0, 0, 0 };
    Hva q_at = h.user_struct(q);
    CHECK(op(src.vm, KVM_SEV_SEND_UPDATE_VMSA, q_at, &error) == -EIO);
    CHECK(error == uint32_t(fw::Status::INVALID_LEN));
    uint32_t hdr_len = h.read_struct<kvm_sev_send_update_vmsa>(q_at).hdr_len;
    REQUIRE(hdr_len == 0x34);
    Hva hdr = h.user_buffer({}, hdr_len), trans = h.user_buffer({}, kPageSize);
    kvm_sev_send_update_vmsa u { id, hdr.value, hdr_len, trans.value, uint32_t(kPageSize) };
    REQUIRE(op(src.vm, KVM_SEV_SEND_UPDATE_VMSA, h.user_struct(u), &error) == 0);
    return { h.read_user(hdr, hdr_len), h.read_user(trans, kPageSize) };
}

int receive_vmsa(GuestVm& dst, uint32_t id, Packet const& pk, uint32_t* error = nullptr)
{
    Host& h = dst.h;
    Hva hdr = h.user_buffer(pk.hdr), trans = h.user_buffer(pk.trans);
    kvm_sev_receive_update_vmsa r { id, hdr.value, uint32_t(pk.hdr.size()), trans.value, uint32_t(pk.trans.size()) };
    return op(dst.vm, KVM_SEV_RECEIVE_UPDATE_VMSA, h.user_struct(r), error);
}

bool contains(Bytes const& hay, uint64_t value)
{
    uint8_t b[8];
    std::memcpy(b, &value, 8);
    return std::search(hay.begin(), hay.end(), b, b + 8) != hay.end();
}

} // namespace

TEST_CASE("an SEV-ES guest's VMSAs migrate through KVM_SEV_SEND/RECEIVE_UPDATE_VMSA", "[vmm][migration][sev-es]")
{
    TempPlatform pa, pb;
    Host a(pa.dir), b(pb.dir);
    GuestVm src(a, true), dst(b, true);
    Vcpu& s0 = src.add_vcpu();
    Vcpu& s1 = src.add_vcpu();
    uint32_t policy = fw::policy::ES | fw::policy::NODBG;
    Bytes image = pattern(kPages * kPageSize, 3);
    launch(src, image, policy);
    REQUIRE((s0.guest_state_protected() && s1.guest_state_protected()));
    Bytes vmsa0 = src.vmsa(s0, true), vmsa1 = src.vmsa(s1, true);
    REQUIRE(contains(vmsa0, 0xB0B0B0B0B0B0B0B1ull)); // the launched registers, seen with the guest's key
    REQUIRE(contains(vmsa1, 0x5EC0DE002ull));

    Bytes session = send_start(src, b, policy);
    uint32_t error = 0;
    // Only vCPUs of this VM.
    kvm_sev_send_update_vmsa none { 7, 0, 0, 0, 0 };
    CHECK(op(src.vm, KVM_SEV_SEND_UPDATE_VMSA, a.user_struct(none)) == -EINVAL);
    std::vector<Packet> pages;
    for (uint32_t i = 0; i < kPages; ++i)
        pages.push_back(send_page(src, i));
    Packet p0 = send_vmsa(src, 0), p1 = send_vmsa(src, 1);
    // The packets are ciphertext under the transport key: no register value in the clear, and
    // not the host's view of the VMSA page either (a re-encryption, not a copy).
    for (Packet const* p : { &p0, &p1 }) {
        for (uint64_t v : { 0xB0B0B0B0B0B0B0B1ull, 0xB0B0B0B0B0B0B0B2ull, 0x5EC0DE001ull, 0x5EC0DE002ull })
            CHECK_FALSE(contains(p->trans, v));
    }
    CHECK(p0.trans != src.vmsa(s0, false));
    // The source's VMSAs are unchanged (it may run on after a SEND_CANCEL).
    CHECK(src.vmsa(s0, true) == vmsa0);
    REQUIRE(op(src.vm, KVM_SEV_SEND_FINISH, Hva(0)) == 0);

    Vcpu& d0 = dst.add_vcpu();
    Vcpu& d1 = dst.add_vcpu();
    // Before RECEIVE_START there is no context: the firmware's INVALID_GUEST (the handle is 0).
    CHECK(receive_vmsa(dst, 0, p0, &error) == -EIO);
    REQUIRE(receive_start(dst, a.export_pdh(), session, policy, &error) == 0);
    for (uint32_t i = 0; i < kPages; ++i)
        REQUIRE(receive_page(dst, i, pages[i], &error) == 0);
    Bytes before = dst.vmsa(d0, false);
    // A flipped byte in the packet, or the header: BAD_MEASUREMENT, the page and vCPU untouched.
    Packet bad = p0;
    bad.trans[0x318] ^= 0x01;
    CHECK(receive_vmsa(dst, 0, bad, &error) == -EIO);
    CHECK(error == uint32_t(fw::Status::BAD_MEASUREMENT));
    bad = p0;
    bad.hdr[20] ^= 0x80;
    CHECK(receive_vmsa(dst, 0, bad, &error) == -EIO);
    CHECK(error == uint32_t(fw::Status::BAD_MEASUREMENT));
    CHECK_FALSE(d0.guest_state_protected());
    CHECK(dst.vmsa(d0, false) == before);
    // A packet that is not one page, or an unknown vCPU: -EINVAL before the firmware is asked.
    Packet shortp = p0;
    shortp.trans.resize(2048);
    CHECK(receive_vmsa(dst, 0, shortp) == -EINVAL);
    CHECK(receive_vmsa(dst, 9, p0) == -EINVAL);

    REQUIRE(receive_vmsa(dst, 0, p0, &error) == 0);
    REQUIRE(receive_vmsa(dst, 1, p1, &error) == 0);
    CHECK((d0.guest_state_protected() && d1.guest_state_protected()));
    // The target's VMSA pages hold the source's registers under the target's key.
    CHECK(dst.vmsa(d0, true) == vmsa0);
    CHECK(dst.vmsa(d1, true) == vmsa1);
    CHECK(dst.vmsa(d0, false) != vmsa0);
    // A VMSA is received once.
    CHECK(receive_vmsa(dst, 0, p0) == -EINVAL);
    REQUIRE(op(dst.vm, KVM_SEV_RECEIVE_FINISH, Hva(0)) == 0);
    CHECK(dst.state() == uint32_t(fw::GuestState::RUNNING));
    CHECK(dst.plaintext() == image);
}

TEST_CASE("an SEV guest migrates between two hosts through the KVM layer", "[vmm][migration]")
{
    TempPlatform pa, pb;
    Host a(pa.dir), b(pb.dir);
    GuestVm src(a), dst(b);
    Bytes image = pattern(kPages * kPageSize, 11);
    uint32_t policy = fw::policy::NODBG | fw::policy::NOKS;
    launch(src, image, policy);

    Bytes session = send_start(src, b, policy);
    CHECK(src.state() == uint32_t(fw::GuestState::SUPDATE));
    std::vector<Packet> packets;
    for (uint32_t i = 0; i < kPages; ++i)
        packets.push_back(send_page(src, i));
    REQUIRE(op(src.vm, KVM_SEV_SEND_FINISH, Hva(0)) == 0);
    CHECK(src.state() == uint32_t(fw::GuestState::SENT));
    for (auto const& pk : packets)
        CHECK(std::search(pk.trans.begin(), pk.trans.end(), image.begin() + 64, image.begin() + 96) == pk.trans.end());

    uint32_t error = 0;
    REQUIRE(receive_start(dst, a.export_pdh(), session, policy, &error) == 0);
    CHECK(dst.state() == uint32_t(fw::GuestState::RUPDATE));
    Bytes before = dst.raw();

    // A changed packet: -EIO with BAD_MEASUREMENT, and the target's page is untouched.
    Packet bad = packets[1];
    bad.trans[7] ^= 0x40;
    CHECK(receive_page(dst, 1, bad, &error) == -EIO);
    CHECK(error == uint32_t(fw::Status::BAD_MEASUREMENT));
    CHECK(dst.raw() == before);

    for (uint32_t i = 0; i < kPages; ++i)
        REQUIRE(receive_page(dst, i, packets[i], &error) == 0);
    REQUIRE(op(dst.vm, KVM_SEV_RECEIVE_FINISH, Hva(0)) == 0);
    CHECK(dst.state() == uint32_t(fw::GuestState::RUNNING));
    CHECK(dst.plaintext() == image);
    CHECK(dst.raw() != image);
}

TEST_CASE("SEND_CANCEL leaves the source running and able to migrate again", "[vmm][migration]")
{
    TempPlatform pa, pb;
    Host a(pa.dir), b(pb.dir);
    REQUIRE(b.psp->platform_init().has_value()); // the target's ccp driver has INITed its PSP
    GuestVm src(a);
    Bytes image = pattern(kPages * kPageSize, 5);
    launch(src, image, 0);
    (void)send_start(src, b, 0);
    (void)send_page(src, 0);
    REQUIRE(op(src.vm, KVM_SEV_SEND_CANCEL, Hva(0)) == 0);
    CHECK(src.state() == uint32_t(fw::GuestState::RUNNING));
    CHECK(src.plaintext() == image);
    (void)send_start(src, b, 0);
    CHECK(src.state() == uint32_t(fw::GuestState::SUPDATE));
}

TEST_CASE("KVM's conventions for the migration commands", "[vmm][migration]")
{
    TempPlatform pa;
    Host a(pa.dir);
    uint32_t error = 0;
    SECTION("not an SEV guest")
    {
        Vm plain(*a.sev, KVM_X86_DEFAULT_VM);
        kvm_sev_send_start s {};
        CHECK(op(plain, KVM_SEV_SEND_START, a.user_struct(s)) == -ENOTTY);
        CHECK(op(plain, KVM_SEV_SEND_FINISH, Hva(0)) == -ENOTTY);
        CHECK(op(plain, KVM_SEV_SEND_CANCEL, Hva(0)) == -ENOTTY);
        CHECK(op(plain, KVM_SEV_RECEIVE_START, a.user_struct(kvm_sev_receive_start {})) == -ENOTTY);
        CHECK(op(plain, KVM_SEV_RECEIVE_UPDATE_DATA, a.user_struct(kvm_sev_receive_update_data {})) == -EINVAL);
        CHECK(op(plain, KVM_SEV_RECEIVE_FINISH, Hva(0)) == -ENOTTY);
    }
    SECTION("the VMSA migration commands on a guest without SEV-ES: -EINVAL")
    {
        GuestVm g(a);
        CHECK(op(g.vm, KVM_SEV_SEND_UPDATE_VMSA, Hva(0)) == -EINVAL);
        CHECK(op(g.vm, KVM_SEV_RECEIVE_UPDATE_VMSA, Hva(0)) == -EINVAL);
    }
    SECTION("bad parameters")
    {
        GuestVm g(a);
        launch(g, pattern(kPages * kPageSize, 1), fw::policy::NOSEND);
        // Missing PDH or session: -EINVAL before the firmware is asked.
        kvm_sev_send_start s {};
        s.session_len = 0x80;
        CHECK(op(g.vm, KVM_SEV_SEND_START, a.user_struct(s)) == -EINVAL);
        // A NOSEND guest: the firmware refuses with POLICY_FAILURE.
        Bytes pdh = a.export_pdh(), plat(3 * 0x824, 0), amd(1664, 0);
        s.pdh_cert_uaddr = a.user_buffer(pdh).value;
        s.pdh_cert_len = 0x824;
        s.plat_certs_uaddr = a.user_buffer(plat).value;
        s.plat_certs_len = uint32_t(plat.size());
        s.amd_certs_uaddr = a.user_buffer(amd).value;
        s.amd_certs_len = uint32_t(amd.size());
        s.session_uaddr = a.user_buffer({}, 0x80).value;
        CHECK(op(g.vm, KVM_SEV_SEND_START, a.user_struct(s), &error) == -EIO);
        CHECK(error == uint32_t(fw::Status::POLICY_FAILURE));
        CHECK(g.state() == uint32_t(fw::GuestState::RUNNING));
        // SEND_UPDATE_DATA on a RUNNING guest: INVALID_GUEST_STATE; crossing a page: -EINVAL.
        Hva hdr = a.user_buffer({}, 0x34), trans = a.user_buffer({}, kPageSize);
        kvm_sev_send_update_data u { hdr.value, 0x34, g.uaddr(0), uint32_t(kPageSize), trans.value, uint32_t(kPageSize) };
        CHECK(op(g.vm, KVM_SEV_SEND_UPDATE_DATA, a.user_struct(u), &error) == -EIO);
        CHECK(error == uint32_t(fw::Status::INVALID_GUEST_STATE));
        u.guest_uaddr += 16;
        CHECK(op(g.vm, KVM_SEV_SEND_UPDATE_DATA, a.user_struct(u)) == -EINVAL);
        // RECEIVE_START with a session of the wrong size: the firmware's INVALID_LEN.
        CHECK(receive_start(g, pdh, Bytes(0x70, 0), 0, &error) == -EIO);
        CHECK(error == uint32_t(fw::Status::INVALID_LEN));
        CHECK(receive_start(g, pdh, {}, 0) == -EINVAL);
    }
}
