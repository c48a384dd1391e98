// sevemu-demo, part 2: an SEV launch told step by step, through the same layers a real launch
// crosses — the guest owner's library, the KVM-like hypervisor layer, the PSP driver, the
// mailbox, the firmware and the memory controller. Nothing here reaches around them.
#include "devices/psp_mailbox.h"
#include "emulator/vmm/vm.h"
#include "firmware/cert_chain.h"
#include "firmware/firmware.h"
#include "firmware/platform_store.h"
#include "tools/sevemu-owner/owner.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

namespace sevemu::demo {

using namespace sevemu::vmm;
namespace fw = sevemu::firmware;

namespace {

struct Step {
    int n { 0 };
    void operator()(char const* text) { std::printf("\n%d. %s\n", ++n, text); }
};

int fail(std::string const& what)
{
    std::fprintf(stderr, "sevemu-demo: %s\n", what.c_str());
    return 1;
}

std::string printable(std::span<uint8_t const> b, size_t n = 40)
{
    std::string s;
    for (size_t i = 0; i < n && i < b.size(); ++i)
        s += (b[i] >= 0x20 && b[i] < 0x7f) ? char(b[i]) : '.';
    return s;
}

} // namespace

int sev_story()
{
    std::printf("\n=== Part 2: launching an SEV guest, as hypervisor, firmware and guest owner see it ===\n");
    Step step;

    // A fresh emulated platform in a temporary directory.
    std::string tmpl = (std::filesystem::temp_directory_path() / "sevemu-demo-XXXXXX").string();
    if (!::mkdtemp(tmpl.data()))
        return fail("cannot create a temporary platform directory");
    std::filesystem::path dir(tmpl);
    struct Cleanup {
        std::filesystem::path d;
        ~Cleanup() { std::error_code ec; std::filesystem::remove_all(d, ec); }
    } cleanup { dir };

    step("A fresh EPYC-Milan platform: DRAM, the AMD Secure Processor behind its mailbox, and its\n"
         "   identity (chip secrets, and sevemu's own test ARK/ASK: not AMD's keys).");
    auto params = fw::FirmwareParams::for_model(fw::CpuModel::Milan);
    mmu::MemoryConfig mcfg;
    mcfg.dram_size = 64ull << 20;
    mcfg.key_slots = params.max_asid + 1;
    mcfg.cache_pages = 2048;
    auto mc_or = mmu::MemoryController::create(mcfg);
    if (!mc_or)
        return fail("cannot create DRAM");
    auto& mc = **mc_or;
    auto store = fw::PlatformStore::open(dir);
    if (!store)
        return fail(store.error().message);
    Trace trace(nullptr);
    fw::Firmware firmware(mc, params, **store, trace);
    devices::IrqLine irq;
    devices::PspMailbox mailbox(firmware, devices::PspVersion::V2, irq);
    devices::Bus mmio;
    constexpr uint64_t kPspBar = 0xFE00'0000ull;
    if (!mmio.add(kPspBar, devices::PspMailbox::kMmioSize, mailbox))
        return fail("cannot map the PSP mailbox");
    HostMemory host(mc, Spa(16ull << 20), 48ull << 20);
    auto psp = PspDriver::create(host, mmio, kPspBar, devices::PspVersion::V2);
    if (!psp)
        return fail("the PSP did not answer the probe");
    if (auto r = psp->platform_init(); !r)
        return fail("INIT failed with firmware status " + std::to_string(r.error().psp_ret));
    auto status = psp->platform_status();
    if (!status)
        return fail("PLATFORM_STATUS failed");
    std::printf("   The host's driver ran INIT, WBINVD and DF_FLUSH. PLATFORM_STATUS: API %u.%u, build %u, state %s.\n",
        status->api_major, status->api_minor, status->build,
        std::string(fw::platform_state_name(fw::PlatformState(status->state))).c_str());

    step("The guest owner checks the platform's certificate chain before trusting it.");
    auto pdh_page = host.alloc_pages(1), chain_pages = host.alloc_pages(2);
    if (!pdh_page || !chain_pages)
        return fail("out of host memory");
    fw::PdhCertExportBuf exp {};
    exp.pdh_cert_paddr = pdh_page->value;
    exp.pdh_cert_length = 0x824;
    exp.certs_paddr = chain_pages->value;
    exp.certs_length = 3 * 0x824;
    if (!psp->do_cmd(fw::CommandId::PDH_CERT_EXPORT, { reinterpret_cast<uint8_t*>(&exp), sizeof exp }))
        return fail("PDH_CERT_EXPORT failed");
    Bytes pdh(0x824), certs(3 * 0x824);
    (void)host.copy_from(direct_map(*pdh_page), pdh);
    (void)host.copy_from(direct_map(*chain_pages), certs);
    auto amd = (*store)->amd_chain(params.model, status->api_major, status->api_minor);
    if (!amd)
        return fail(amd.error().message);
    auto pdh_cert = fw::SevCert::parse(pdh);
    auto pek = fw::SevCert::parse(std::span(certs).subspan(0, 0x824));
    auto oca = fw::SevCert::parse(std::span(certs).subspan(0x824, 0x824));
    auto cek = fw::SevCert::parse(std::span(certs).subspan(2 * 0x824, 0x824));
    if (!pdh_cert || !pek || !oca || !cek)
        return fail("an exported certificate does not parse");
    // As sevctl does, the CEK signed by the ASK comes from the key distribution service (here the
    // platform's store stands in for it); the firmware's own export carries the chip's CEK.
    auto key_of = [](fw::SevCert const& c) { auto b = c.body().subspan(0x10); return Bytes(b.begin(), b.end()); };
    if (key_of(*cek) != key_of(amd->cek))
        return fail("the firmware's CEK is not the one the ASK signed");
    fw::SevChain chain { amd->ark, amd->ask, amd->cek, *oca, *pek, *pdh_cert };
    auto verified = fw::verify_chain(chain);
    if (!verified)
        return fail("chain refused: " + verified.error().message());
    std::printf("   ARK -> ASK -> CEK -> PEK <- OCA, PEK -> PDH: every signature verifies (the ASK-signed CEK, as\n"
                "   sevctl fetches it from AMD's key server, comes from the platform's store and holds the same key).\n"
                "   (The root is sevemu's test ARK, so a real AMD verifier would refuse it, as it should.)\n");

    step("The guest owner opens a session with the platform's PDH (ECDH P-384): a DH certificate and\n"
         "   a session blob carrying the wrapped transport keys TEK and TIK. Policy 0x0: debugging allowed.");
    uint32_t policy = 0;
    auto session = owner::make_session(pdh, policy);
    if (!session)
        return fail(session.error().message);
    std::printf("   godh.cert %zu bytes, session blob %zu bytes (what QEMU's dh-cert-file and session-file hold).\n",
        session->godh_cert.size(), session->session_blob.size());

    step("The hypervisor creates the VM (KVM_SEV_INIT) and starts the launch (KVM_SEV_LAUNCH_START):\n"
         "   the firmware unwraps the session keys, creates a guest context and ACTIVATEs an ASID key.");
    SevHostConfig hc;
    hc.max_asid = params.max_asid;
    hc.min_sev_asid = params.min_sev_asid;
    SevHost sev(*psp, mc, hc);
    Vm vm(sev, KVM_X86_DEFAULT_VM);
    auto user = [&](std::span<uint8_t const> bytes, size_t size = 0) -> std::optional<Hva> {
        auto p = host.alloc_pages((std::max<size_t>({ size, bytes.size(), 1 }) + kPageSize - 1) / kPageSize);
        if (!p || !host.copy_to(direct_map(*p), bytes))
            return std::nullopt;
        return direct_map(*p);
    };
    auto op = [&](uint32_t id, std::optional<Hva> data, char const* name) -> bool {
        kvm_sev_cmd cmd {};
        cmd.id = id;
        cmd.data = data ? data->value : 0;
        int r = vm.memory_encrypt_op(cmd);
        if (r)
            std::fprintf(stderr, "sevemu-demo: %s failed: %d (firmware status %#x)\n", name, r, cmd.error);
        return r == 0;
    };
    if (!op(KVM_SEV_INIT, std::nullopt, "KVM_SEV_INIT"))
        return 1;
    auto dh = user(session->godh_cert), blob = user(session->session_blob);
    kvm_sev_launch_start start {};
    start.policy = policy;
    start.dh_uaddr = dh->value;
    start.dh_len = uint32_t(session->godh_cert.size());
    start.session_uaddr = blob->value;
    start.session_len = uint32_t(session->session_blob.size());
    auto start_at = user({ reinterpret_cast<uint8_t const*>(&start), sizeof start });
    if (!op(KVM_SEV_LAUNCH_START, start_at, "KVM_SEV_LAUNCH_START"))
        return 1;
    std::printf("   guest handle %u, ASID %u; the memory controller's key slot %u now holds the guest's key.\n",
        vm.sev().handle, vm.sev().asid, vm.sev().asid);

    step("The hypervisor places the guest image in guest RAM and KVM_SEV_LAUNCH_UPDATE_DATA encrypts it\n"
         "   in place with the guest's key while the firmware extends the launch digest.");
    constexpr size_t kPages = 4;
    auto ram = host.alloc_pages(kPages);
    if (!ram)
        return fail("out of host memory");
    kvm_userspace_memory_region region { 0, 0, 0, kPages * kPageSize, direct_map(*ram).value };
    if (vm.set_user_memory_region(region) != 0)
        return fail("KVM_SET_USER_MEMORY_REGION failed");
    Bytes image(kPages * kPageSize, 0);
    std::string text = "sevemu demo guest image: code and data measured at launch.";
    for (size_t off = 0; off < image.size(); off += 256)
        std::copy(text.begin(), text.end(), image.begin() + off);
    (void)host.copy_to(direct_map(*ram), image);
    kvm_sev_launch_update_data upd { direct_map(*ram).value, uint32_t(image.size()) };
    if (!op(KVM_SEV_LAUNCH_UPDATE_DATA, user({ reinterpret_cast<uint8_t const*>(&upd), sizeof upd }), "LAUNCH_UPDATE_DATA"))
        return 1;
    std::printf("   %zu KiB measured and encrypted.\n", image.size() / 1024);

    step("KVM_SEV_LAUNCH_MEASURE: the firmware's HMAC (under the TIK) of the launch digest and policy.");
    auto mbuf = user({}, 48);
    kvm_sev_launch_measure measure { mbuf->value, 48 };
    if (!op(KVM_SEV_LAUNCH_MEASURE, user({ reinterpret_cast<uint8_t const*>(&measure), sizeof measure }), "LAUNCH_MEASURE"))
        return 1;
    Bytes measurement(48);
    (void)host.copy_from(*mbuf, measurement);
    std::printf("   measurement %s\n   mnonce      %s\n", to_hex(std::span(measurement).first(32)).c_str(),
        to_hex(std::span(measurement).subspan(32)).c_str());

    step("The guest owner computes the digest of the image it expects and checks the measurement.");
    auto digest = fw::sha256(image);
    owner::PlatformVersion version { status->api_major, status->api_minor, status->build };
    auto ok = owner::verify_measurement(session->keys.tik, measurement, version, policy, digest);
    std::printf("   expected launch digest %s: %s\n", to_hex(digest).c_str(), ok ? "the measurement MATCHES" : "MISMATCH");
    if (!ok)
        return fail(ok.error().message);

    step("Only now does the owner release a secret: encrypted under the TEK, MACed under the TIK and\n"
         "   bound to this measurement. KVM_SEV_LAUNCH_SECRET has the firmware decrypt it into guest memory.");
    std::string secret_text = "disk-encryption-key=7f3a9c1e5b2d8046";
    Bytes secret(secret_text.begin(), secret_text.end());
    auto packet = owner::build_secret(session->keys.tek, session->keys.tik, measurement, secret);
    if (!packet)
        return fail(packet.error().message);
    auto hdr = user(packet->header), trans = user(packet->ciphertext);
    kvm_sev_launch_secret ls {};
    ls.hdr_uaddr = hdr->value;
    ls.hdr_len = uint32_t(packet->header.size());
    ls.guest_uaddr = direct_map(*ram).value + 0x3000;
    ls.guest_len = uint32_t(packet->ciphertext.size());
    ls.trans_uaddr = trans->value;
    ls.trans_len = uint32_t(packet->ciphertext.size());
    if (!op(KVM_SEV_LAUNCH_SECRET, user({ reinterpret_cast<uint8_t const*>(&ls), sizeof ls }), "LAUNCH_SECRET"))
        return 1;
    if (!op(KVM_SEV_LAUNCH_FINISH, std::nullopt, "LAUNCH_FINISH"))
        return 1;
    kvm_sev_guest_status gs {};
    auto gs_at = user({ reinterpret_cast<uint8_t const*>(&gs), sizeof gs });
    if (!op(KVM_SEV_GUEST_STATUS, gs_at, "GUEST_STATUS"))
        return 1;
    (void)host.copy_from(*gs_at, { reinterpret_cast<uint8_t*>(&gs), sizeof gs });
    std::printf("   secret injected at guest-physical 0x3000; LAUNCH_FINISH; guest state: %s.\n",
        std::string(fw::guest_state_name(fw::GuestState(gs.state))).c_str());

    step("What each party sees at guest-physical 0x3000:");
    Bytes host_view(48), guest_view(48);
    (void)host.copy_from(direct_map(*ram) + 0x3000, host_view);
    (void)mc.read(*ram + 0x3000, guest_view, mmu::KeyId::slot(vm.sev().asid));
    std::printf("   the hypervisor (what DRAM holds): %s |%s|\n", to_hex(std::span(host_view).first(16)).c_str(),
        printable(host_view).c_str());
    std::printf("   the guest (its ASID's key):        %s |%s|\n", to_hex(std::span(guest_view).first(16)).c_str(),
        printable(guest_view).c_str());
    auto proof = fw::sha256(std::span(guest_view).first(secret.size()));
    bool delivered = std::equal(secret.begin(), secret.end(), guest_view.begin());
    bool hidden = std::search(host_view.begin(), host_view.end(), secret.begin(), secret.end()) == host_view.end();
    std::printf("   SHA-256 of the secret as the guest holds it: %s\n", to_hex(proof).c_str());
    std::printf("   the owner's secret arrived intact: %s; the hypervisor saw only ciphertext: %s\n",
        delivered ? "yes" : "NO", hidden ? "yes" : "NO");

    std::printf("\nNext milestone (issue 5): the guest runs with VMRUN on the emulated CPU, reads this secret\n"
                "itself and prints its proof on the serial port; `sevemu -object sev-guest` and QMP drive it.\n");
    return delivered && hidden ? 0 : 1;
}

} // namespace sevemu::demo
