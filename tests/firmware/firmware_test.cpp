// The SEV-KM command set, driven through the PSP mailbox as a hypervisor drives it.
#include "fw_harness.h"
#include "owner_side.h"

#include "firmware/cert_chain.h"

#include <catch2/catch.hpp>
#include <openssl/sha.h>

using namespace sevemu;
using namespace sevemu::test;

namespace {

Bytes pattern(size_t n, uint8_t seed)
{
    Bytes b(n);
    for (size_t i = 0; i < n; ++i)
        b[i] = uint8_t(seed + i * 7 + (i >> 8));
    return b;
}

Bytes pek_csr(TestPlatform& p)
{
    PekCsrBuf b {};
    b.csr_paddr = TestPlatform::kData;
    b.csr_length = kSevCertSize;
    REQUIRE(p.run(CommandId::PEK_CSR, b) == 0);
    return p.peek(TestPlatform::kData, kSevCertSize);
}

Sha256Digest sha256_of(Bytes const& a)
{
    return sha256(a);
}

bool trace_has(TestPlatform const& p, std::string_view needle)
{
    for (auto const& l : p.trace.captured())
        if (l.find(needle) != std::string::npos)
            return true;
    return false;
}

} // namespace

TEST_CASE("PLATFORM_STATUS in UNINIT reports the firmware version and zeros", "[firmware]")
{
    TestPlatform p;
    auto s = p.platform_status();
    CHECK(s.api_major == 1);
    CHECK(s.api_minor == 51);
    CHECK(s.state == 0);
    CHECK(s.owner == 0);
    CHECK(s.config == 0);
    CHECK(s.guest_count == 0);
}

TEST_CASE("INIT: UNINIT -> INIT, flag and reserved checks, no second INIT", "[firmware]")
{
    TestPlatform p;
    InitBuf bad {};
    bad.flags = 2;
    CHECK(p.run(CommandId::INIT, bad) == st(Status::INVALID_CONFIG));
    bad = {};
    bad.reserved_004 = 1;
    CHECK(p.run(CommandId::INIT, bad) == st(Status::INVALID_CONFIG));
    CHECK(p.platform_status().state == 0);
    REQUIRE(p.init() == 0);
    CHECK(p.platform_status().state == 1);
    CHECK(p.init() == st(Status::INVALID_PLATFORM_STATE));
    CHECK(trace_has(p, "platform UNINIT -> INIT"));
}

TEST_CASE("INIT with SEV-ES: the TMR must be 1 MiB, 1 MiB aligned, in DRAM", "[firmware]")
{
    TestPlatform p;
    InitBuf b {};
    b.flags = kInitFlagEs;
    b.tmr_paddr = TestPlatform::kTmr + 0x1000;
    b.tmr_length = kTmrSize;
    CHECK(p.run(CommandId::INIT, b) == st(Status::INVALID_ADDRESS));
    b.tmr_paddr = TestPlatform::kTmr;
    b.tmr_length = kTmrSize / 2;
    CHECK(p.run(CommandId::INIT, b) == st(Status::INVALID_LEN));
    b.tmr_paddr = 0xFFF00000ull; // MMIO hole
    b.tmr_length = kTmrSize;
    CHECK(p.run(CommandId::INIT, b) == st(Status::INVALID_CONFIG));
    CHECK(p.platform_status().state == 0);
    REQUIRE(p.init(kInitFlagEs) == 0);
    auto s = p.platform_status();
    CHECK(s.config == kStatusConfigEs);
    // Linux's flags view: bit 8 is ES (struct sev_user_data_status).
    uint8_t raw[12];
    std::memcpy(raw, &s, 12);
    CHECK((load_le(std::span<const uint8_t>(raw + 3, 4), 4) & 0x100) == 0x100);
}

TEST_CASE("The SEV-ES TMR is out of reach of every command", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.probe(kInitFlagEs) == 0);
    uint32_t h = p.running_guest(0, 150);
    DebugBuf d {};
    d.handle = h;
    d.src_paddr = TestPlatform::kGuest;
    d.dst_paddr = TestPlatform::kTmr + 0x100;
    d.length = 16;
    CHECK(p.run(CommandId::DBG_DECRYPT, d) == st(Status::INVALID_ADDRESS));
    d.dst_paddr = TestPlatform::kTmr - 16;
    d.length = 32; // straddles the TMR's start
    CHECK(p.run(CommandId::DBG_DECRYPT, d) == st(Status::INVALID_ADDRESS));
    GetIdBuf g {};
    g.id_paddr = TestPlatform::kTmr + kTmrSize - 32;
    g.id_length = 64;
    CHECK(p.run(CommandId::GET_ID, g) == st(Status::INVALID_ADDRESS));
    CHECK(p.issue(uint32_t(CommandId::PLATFORM_STATUS), TestPlatform::kTmr) == st(Status::INVALID_ADDRESS));
    d.dst_paddr = TestPlatform::kTmr + kTmrSize; // just after it
    d.length = 16;
    CHECK(p.run(CommandId::DBG_DECRYPT, d) == 0);
    // After SHUTDOWN the region is ordinary memory again.
    REQUIRE(p.run0(CommandId::SHUTDOWN) == 0);
    CHECK(p.issue(uint32_t(CommandId::PLATFORM_STATUS), TestPlatform::kTmr) == 0);
}

TEST_CASE("SEV-ES is refused on a part without it", "[firmware]")
{
    TestPlatform p(FirmwareParams::for_model(CpuModel::Naples));
    CHECK(p.init(kInitFlagEs) == st(Status::INVALID_CONFIG));
    REQUIRE(p.probe() == 0);
    uint32_t h = 0;
    CHECK(p.launch_start(policy::ES, h) == st(Status::UNSUPPORTED));
}

TEST_CASE("SHUTDOWN from every state destroys guests and returns to UNINIT", "[firmware]")
{
    TestPlatform p;
    CHECK(p.run0(CommandId::SHUTDOWN) == 0); // UNINIT: a no-op
    REQUIRE(p.probe() == 0);
    CHECK(p.run0(CommandId::SHUTDOWN) == 0);
    CHECK(p.platform_status().state == 0);
    REQUIRE(p.probe() == 0);
    uint32_t h = p.running_guest(0, 200);
    CHECK(p.platform_status().state == 2);
    CHECK(p.run0(CommandId::SHUTDOWN) == 0);
    CHECK(p.platform_status().state == 0);
    REQUIRE(p.init() == 0);
    CHECK(p.guest_status(h).state == 0);
    CHECK(p.platform_status().guest_count == 0);
}

TEST_CASE("PLATFORM_RESET only in UNINIT; the next INIT makes a new identity", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.init() == 0);
    Bytes pek1 = pek_csr(p);
    CHECK(p.run0(CommandId::PLATFORM_RESET) == st(Status::INVALID_PLATFORM_STATE));
    REQUIRE(p.run0(CommandId::SHUTDOWN) == 0);
    REQUIRE(p.init() == 0);
    CHECK(pek_csr(p) == pek1); // persistent across SHUTDOWN/INIT
    REQUIRE(p.run0(CommandId::SHUTDOWN) == 0);
    REQUIRE(p.run0(CommandId::PLATFORM_RESET) == 0);
    REQUIRE(p.init() == 0);
    CHECK(pek_csr(p) != pek1);
}

TEST_CASE("PEK_GEN: INIT only, new OCA/PEK/PDH, self-owned", "[firmware]")
{
    TestPlatform p;
    CHECK(p.run0(CommandId::PEK_GEN) == st(Status::INVALID_PLATFORM_STATE));
    REQUIRE(p.probe() == 0);
    Bytes pek1 = pek_csr(p);
    Bytes pdh1 = export_pdh(p);
    REQUIRE(p.run0(CommandId::PEK_GEN) == 0);
    CHECK(pek_csr(p) != pek1);
    CHECK(export_pdh(p) != pdh1);
    CHECK(p.platform_status().owner == 0);
    uint32_t h = 0;
    REQUIRE(p.launch_start(0, h) == 0);
    CHECK(p.run0(CommandId::PEK_GEN) == st(Status::INVALID_PLATFORM_STATE)); // WORKING
}

TEST_CASE("PEK_CSR: length query, then the PEK body with both signature slots empty", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.init() == 0);
    PekCsrBuf q {};
    CHECK(p.run(CommandId::PEK_CSR, q) == st(Status::INVALID_LEN));
    CHECK(q.csr_length == kSevCertSize);
    Bytes csr = pek_csr(p);
    auto cert = SevCert::parse(csr);
    REQUIRE(cert);
    CHECK(cert->usage() == SevUsage::PEK);
    CHECK(cert->slot_empty(0));
    CHECK(cert->slot_empty(1));
    CHECK(cert->api_major() == 1);
    CHECK(cert->api_minor() == 51);
}

TEST_CASE("PDH_CERT_EXPORT: length query, PDH and chain PEK||OCA||CEK that verify", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.init() == 0);
    PdhCertExportBuf q {};
    q.pdh_cert_length = kSevCertSize; // only the chain is too short
    CHECK(p.run(CommandId::PDH_CERT_EXPORT, q) == st(Status::INVALID_LEN));
    CHECK(q.pdh_cert_length == 0x824);
    CHECK(q.certs_length == 0x186C);
    Bytes chain;
    Bytes pdh = export_pdh(p, &chain);
    auto pdh_c = SevCert::parse(pdh);
    auto pek_c = SevCert::parse(std::span(chain).subspan(0, 0x824));
    auto oca_c = SevCert::parse(std::span(chain).subspan(0x824, 0x824));
    auto cek_c = SevCert::parse(std::span(chain).subspan(0x1048, 0x824));
    REQUIRE(pdh_c);
    REQUIRE(pek_c);
    REQUIRE(oca_c);
    REQUIRE(cek_c);
    CHECK(pdh_c->usage() == SevUsage::PDH);
    CHECK(pdh_c->algo() == SevAlgo::ECDH_SHA256);
    CHECK(cek_c->usage() == SevUsage::CEK);
    CHECK(cek_c->slot_empty(0)); // the exported CEK is unsigned (KDS serves the signed one)
    CHECK(cek_c->slot_empty(1));
    CHECK(sev_cert_validate(*oca_c, *oca_c));
    CHECK(sev_cert_validate(*pek_c, *oca_c));
    CHECK(sev_cert_validate(*pek_c, *cek_c));
    CHECK(sev_cert_validate(*pdh_c, *pek_c));
}

TEST_CASE("PDH_GEN: a new PDH signed by the same PEK, also in WORKING", "[firmware]")
{
    TestPlatform p;
    CHECK(p.run0(CommandId::PDH_GEN) == st(Status::INVALID_PLATFORM_STATE));
    REQUIRE(p.probe() == 0);
    Bytes pek = pek_csr(p);
    Bytes pdh1 = export_pdh(p);
    uint32_t h = 0;
    REQUIRE(p.launch_start(0, h) == 0);
    REQUIRE(p.run0(CommandId::PDH_GEN) == 0);
    Bytes chain;
    Bytes pdh2 = export_pdh(p, &chain);
    CHECK(pdh2 != pdh1);
    CHECK(pek_csr(p) == pek);
    CHECK(sev_cert_validate(*SevCert::parse(pdh2), *SevCert::parse(std::span(chain).subspan(0, 0x824))));
}

TEST_CASE("GET_ID: any state, length query, stable per chip, different between chips", "[firmware]")
{
    TestPlatform p;
    GetIdBuf q {};
    CHECK(p.run(CommandId::GET_ID, q) == st(Status::INVALID_LEN));
    CHECK(q.id_length == 64);
    GetIdBuf b {};
    b.id_paddr = TestPlatform::kData;
    b.id_length = 128;
    REQUIRE(p.run(CommandId::GET_ID, b) == 0);
    CHECK(b.id_length == 64); // one socket
    Bytes id1 = p.peek(TestPlatform::kData, 64);
    CHECK(id1 != Bytes(64, 0));
    p.restart();
    REQUIRE(p.run(CommandId::GET_ID, b) == 0);
    CHECK(p.peek(TestPlatform::kData, 64) == id1);
    TestPlatform other;
    REQUIRE(other.run(CommandId::GET_ID, b) == 0);
    CHECK(other.peek(TestPlatform::kData, 64) != id1);
}

TEST_CASE("PEK_CERT_IMPORT: an owner-signed PEK takes ownership", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.init() == 0);
    Bytes csr = pek_csr(p);
    // The owner: a self-signed OCA (api 0.0, as sev-tool's sign_pek_csr makes it), signing the CSR.
    auto oca_key = p384_generate();
    auto oca = SevCert::make_ec(0, 0, SevUsage::OCA, SevAlgo::ECDSA_SHA256, oca_key->get());
    CertSigner oca_signer { SevUsage::OCA, SevAlgo::ECDSA_SHA256, std::move(*p384_from_private(*p384_private_scalar(oca_key->get()))) };
    REQUIRE(oca->sign(0, oca_signer));
    auto pek = SevCert::from_bytes(csr);
    REQUIRE(pek->sign(0, oca_signer));
    constexpr uint64_t kPek = TestPlatform::kData + 0x4000, kOca = TestPlatform::kData + 0x5000;
    p.poke(kPek, pek->serialize());
    p.poke(kOca, oca->serialize());
    PekCertImportBuf b {};
    b.pek_cert_paddr = kPek;
    b.pek_cert_length = kSevCertSize;
    b.oca_cert_paddr = kOca;
    b.oca_cert_length = kSevCertSize;

    SECTION("wrong lengths")
    {
        b.pek_cert_length = 0x823;
        CHECK(p.run(CommandId::PEK_CERT_IMPORT, b) == st(Status::INVALID_LEN));
        CHECK(p.platform_status().owner == 0);
    }
    SECTION("a PEK that is not this platform's")
    {
        auto other_key = p384_generate();
        auto other = SevCert::make_ec(1, 51, SevUsage::PEK, SevAlgo::ECDSA_SHA256, other_key->get());
        REQUIRE(other->sign(0, oca_signer));
        p.poke(kPek, other->serialize());
        CHECK(p.run(CommandId::PEK_CERT_IMPORT, b) == st(Status::INVALID_CERTIFICATE));
        CHECK(p.platform_status().owner == 0);
    }
    SECTION("a forged OCA signature")
    {
        Bytes forged = pek->serialize();
        forged[0x41C + 5] ^= 1; // inside sig1's r
        p.poke(kPek, forged);
        CHECK(p.run(CommandId::PEK_CERT_IMPORT, b) == st(Status::BAD_SIGNATURE));
        CHECK(p.platform_status().owner == 0);
    }
    SECTION("success, persistent, then ALREADY_OWNED")
    {
        REQUIRE(p.run(CommandId::PEK_CERT_IMPORT, b) == 0);
        CHECK(p.platform_status().owner == 1);
        Bytes chain;
        Bytes pdh = export_pdh(p, &chain);
        auto pek_now = SevCert::parse(std::span(chain).subspan(0, 0x824));
        CHECK(Bytes(chain.begin() + 0x824, chain.begin() + 0x1048) == oca->serialize());
        CHECK(sev_cert_validate(*pek_now, *oca));
        auto cek = SevCert::parse(std::span(chain).subspan(0x1048, 0x824));
        CHECK(sev_cert_validate(*pek_now, *cek)); // the CEK signature was kept
        CHECK(sev_cert_validate(*SevCert::parse(pdh), *pek_now));
        CHECK(p.run(CommandId::PEK_CERT_IMPORT, b) == st(Status::ALREADY_OWNED));
        p.restart();
        REQUIRE(p.init() == 0);
        CHECK(p.platform_status().owner == 1);
        // PEK_GEN gives the platform back to the firmware.
        REQUIRE(p.run0(CommandId::PEK_GEN) == 0);
        CHECK(p.platform_status().owner == 0);
    }
}

TEST_CASE("Persistence: OCA, PEK and PDH survive a power cycle", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.init() == 0);
    Bytes chain1;
    Bytes pdh1 = export_pdh(p, &chain1);
    REQUIRE(p.run0(CommandId::PDH_GEN) == 0);
    Bytes chain2;
    Bytes pdh2 = export_pdh(p, &chain2);
    p.restart();
    CHECK(p.platform_status().state == 0);
    REQUIRE(p.init() == 0);
    Bytes chain3;
    CHECK(export_pdh(p, &chain3) == pdh2);
    CHECK(chain3 == chain2);
    CHECK(Bytes(chain1.begin(), chain1.begin() + 0x824) == Bytes(chain3.begin(), chain3.begin() + 0x824));
}

TEST_CASE("A damaged SPI NV image: SECURE_DATA_INVALID, erased, the retry succeeds", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.init() == 0);
    Bytes pek1 = pek_csr(p);
    p.restart();
    auto image = read_file(p.dir() / "nv.bin");
    REQUIRE(image);
    REQUIRE(image->size() == 0x8000);
    (*image)[100] ^= 0x40;
    REQUIRE(write_file_atomic(p.dir() / "nv.bin", *image));
    CHECK(p.init() == st(Status::SECURE_DATA_INVALID));
    CHECK(p.platform_status().state == 0);
    CHECK(*read_file(p.dir() / "nv.bin") == Bytes(0x8000, 0xFF));
    REQUIRE(p.init() == 0); // Linux retries INIT once
    CHECK(pek_csr(p) != pek1);
    // A truncated file is damaged data too.
    p.restart();
    REQUIRE(write_file_atomic(p.dir() / "nv.bin", Bytes(100, 0)));
    CHECK(p.init() == st(Status::SECURE_DATA_INVALID));
    CHECK(p.init() == 0);
}

TEST_CASE("INIT_EX: NV storage in a host DRAM buffer", "[firmware]")
{
    TestPlatform p;
    constexpr uint64_t kNv = 0x200000;
    p.poke(kNv, Bytes(0x8000, 0xFF)); // an empty NV file, as Linux creates it
    InitExBuf b {};
    b.length = 0x24;
    b.nv_paddr = kNv;
    b.nv_length = 0x8000;

    InitExBuf bad = b;
    bad.length = 0x20;
    CHECK(p.run(CommandId::INIT_EX, bad) == st(Status::INVALID_LEN));
    bad = b;
    bad.nv_paddr = kNv + 0x800;
    CHECK(p.run(CommandId::INIT_EX, bad) == st(Status::INVALID_ADDRESS));
    bad = b;
    bad.nv_length = 0x4000;
    CHECK(p.run(CommandId::INIT_EX, bad) == st(Status::INVALID_LEN));
    bad = b;
    bad.nv_paddr = TestPlatform::kDramSize - 0x1000; // runs past the end of DRAM
    CHECK(p.run(CommandId::INIT_EX, bad) == st(Status::INVALID_ADDRESS));
    bad = b;
    bad.reserved_014 = 1;
    CHECK(p.run(CommandId::INIT_EX, bad) == st(Status::INVALID_CONFIG));
    CHECK(p.platform_status().state == 0);

    REQUIRE(p.run(CommandId::INIT_EX, b) == 0);
    Bytes nv = p.peek(kNv, 0x8000);
    CHECK(nv != Bytes(0x8000, 0xFF)); // the firmware wrote its new identity into the buffer
    Bytes pdh = export_pdh(p);
    CHECK(!std::filesystem::exists(p.dir() / "nv.bin")); // the SPI store was not used

    // The driver keeps the buffer in a file and hands it back after a reboot.
    p.restart();
    p.poke(kNv, nv);
    REQUIRE(p.run(CommandId::INIT_EX, b) == 0);
    CHECK(export_pdh(p) == pdh);

    // A damaged buffer: SECURE_DATA_INVALID, the buffer erased, the retry makes a new identity.
    p.restart();
    nv[0x7FF0] ^= 1; // the IV
    p.poke(kNv, nv);
    CHECK(p.run(CommandId::INIT_EX, b) == st(Status::SECURE_DATA_INVALID));
    CHECK(p.peek(kNv, 0x8000) == Bytes(0x8000, 0xFF));
    REQUIRE(p.run(CommandId::INIT_EX, b) == 0);
    CHECK(export_pdh(p) != pdh);
}

TEST_CASE("ASIDs: DF_FLUSH after INIT, ranges, ownership, dirty until WBINVD + DF_FLUSH", "[firmware]")
{
    TestPlatform p; // Milan: ASIDs 1..509, SEV-ES below 100
    REQUIRE(p.init(kInitFlagEs) == 0);
    uint32_t h1 = 0, h2 = 0, hes = 0;
    REQUIRE(p.launch_start(0, h1) == 0);
    REQUIRE(p.launch_start(0, h2) == 0);
    REQUIRE(p.launch_start(policy::ES, hes) == 0);

    // Every ASID is dirty after INIT until DF_FLUSH.
    CHECK(p.activate(h1, 200) == st(Status::DFFLUSH_REQUIRED));
    REQUIRE(p.run0(CommandId::DF_FLUSH) == 0);

    CHECK(p.activate(h1, 0) == st(Status::INVALID_ASID));
    CHECK(p.activate(h1, 510) == st(Status::INVALID_ASID));
    CHECK(p.activate(h1, 50) == st(Status::INVALID_ASID)); // an ES ASID for an SEV guest
    CHECK(p.activate(hes, 100) == st(Status::INVALID_ASID)); // an SEV ASID for an ES guest
    CHECK(p.activate(999, 200) == st(Status::INVALID_GUEST));
    CHECK(p.activate(0, 200) == st(Status::INVALID_GUEST));
    REQUIRE(p.activate(h1, 200) == 0);
    CHECK(p.mc->slot_programmed(200));
    CHECK(p.activate(h2, 200) == st(Status::ASID_OWNED));
    CHECK(p.activate(h1, 201) == st(Status::ACTIVE));
    REQUIRE(p.activate(hes, 1) == 0);
    CHECK(p.guest_status(h1).asid == 200);
    CHECK(p.fw->asid_state(200) == AsidState::Pending);

    // Pending (never ran): DEACTIVATE makes the ASID clean at once.
    REQUIRE(p.deactivate(h1) == 0);
    CHECK(p.fw->asid_state(200) == AsidState::Clean);
    CHECK(p.deactivate(h1) == st(Status::INACTIVE));
    REQUIRE(p.activate(h2, 200) == 0);

    // A guest that ran: its ASID is dirty after DEACTIVATE, and stays dirty while the caches
    // hold lines under its key.
    REQUIRE(p.update_data(h2, TestPlatform::kGuest, 4096) == 0);
    REQUIRE(p.measure(h2) == 0);
    REQUIRE(p.finish(h2) == 0);
    CHECK(p.fw->asid_state(200) == AsidState::InUse);
    Bytes sink(64);
    p.peek_into(TestPlatform::kGuest, sink.data(), 64, mmu::KeyId::slot(200)); // the guest touches its page
    REQUIRE(p.deactivate(h2) == 0);
    CHECK(p.fw->asid_state(200) == AsidState::Dirty);
    CHECK(p.activate(h1, 200) == st(Status::DFFLUSH_REQUIRED));
    CHECK(p.run0(CommandId::DF_FLUSH) == st(Status::WBINVD_REQUIRED));
    CHECK(p.fw->asid_state(200) == AsidState::Dirty);
    p.mc->wbinvd(); // WBINVD on every core
    REQUIRE(p.run0(CommandId::DF_FLUSH) == 0);
    CHECK(p.fw->asid_state(200) == AsidState::Clean);
    CHECK_FALSE(p.mc->slot_programmed(200)); // the old key left the slot
    // The running guest gets an ASID again and is active at once.
    REQUIRE(p.activate(h2, 201) == 0);
    CHECK(p.fw->asid_state(201) == AsidState::InUse);
}

TEST_CASE("ACTIVATE_EX: length and APIC-ID list checks", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.probe() == 0);
    uint32_t h = 0;
    REQUIRE(p.launch_start(0, h) == 0);
    uint32_t ids[2] = { 0, 1 };
    p.poke(TestPlatform::kData, ids, sizeof ids);
    ActivateExBuf b {};
    b.ex_len = 0x18;
    b.handle = h;
    b.asid = 300;
    b.numids = 2;
    b.ids_paddr = TestPlatform::kData;
    ActivateExBuf bad = b;
    bad.ex_len = 0x14;
    CHECK(p.run(CommandId::ACTIVATE_EX, bad) == st(Status::INVALID_PARAM));
    bad = b;
    bad.numids = 0;
    CHECK(p.run(CommandId::ACTIVATE_EX, bad) == st(Status::INVALID_PARAM));
    bad = b;
    bad.ids_paddr = 0xFFFF'FFFF'F000ull;
    CHECK(p.run(CommandId::ACTIVATE_EX, bad) == st(Status::INVALID_ADDRESS));
    bad = b;
    bad.handle = 9;
    CHECK(p.run(CommandId::ACTIVATE_EX, bad) == st(Status::INVALID_GUEST));
    bad = b;
    bad.asid = 0;
    bad.numids = 0; // the ASID is checked before the list (AMD-ASPFW mcmd_activate_ex_common)
    CHECK(p.run(CommandId::ACTIVATE_EX, bad) == st(Status::INVALID_ASID));
    CHECK(p.guest_status(h).asid == 0);
    REQUIRE(p.run(CommandId::ACTIVATE_EX, b) == 0);
    CHECK(p.guest_status(h).asid == 300);
    // Unlike ACTIVATE, ACTIVATE_EX may repeat on the guest's own ASID (more CCXs)...
    CHECK(p.run(CommandId::ACTIVATE_EX, b) == 0);
    CHECK(p.activate(h, 300) == st(Status::ASID_OWNED));
    // ...but not move it to another ASID.
    bad = b;
    bad.asid = 301;
    CHECK(p.run(CommandId::ACTIVATE_EX, bad) == st(Status::ACTIVE));
    // Another guest cannot take an ASID in use.
    uint32_t h2 = 0;
    REQUIRE(p.launch_start(0, h2) == 0);
    bad = b;
    bad.handle = h2;
    CHECK(p.run(CommandId::ACTIVATE_EX, bad) == st(Status::ASID_OWNED));
}

TEST_CASE("LAUNCH_UPDATE_DATA encrypts in place and extends the launch digest", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.probe() == 0);
    uint32_t h = 0;
    REQUIRE(p.launch_start(0, h) == 0);
    Bytes page1 = pattern(4096, 1), page2 = pattern(8192, 9);
    p.poke(TestPlatform::kGuest, page1);
    p.poke(TestPlatform::kGuest + 0x3000, page2);
    CHECK(p.update_data(h, TestPlatform::kGuest, 4096) == st(Status::INACTIVE));
    REQUIRE(p.activate(h, 150) == 0);
    CHECK(p.update_data(h, TestPlatform::kGuest + 8, 4096) == st(Status::INVALID_ADDRESS));
    CHECK(p.update_data(h, TestPlatform::kGuest, 100) == st(Status::INVALID_LEN));
    CHECK(p.update_data(h, TestPlatform::kGuest, 0) == st(Status::INVALID_LEN));
    CHECK(p.update_data(h, TestPlatform::kDramSize - 16, 32) == st(Status::INVALID_ADDRESS));
    CHECK(p.update_data(h + 1, TestPlatform::kGuest, 4096) == st(Status::INVALID_GUEST));
    CHECK(p.peek(TestPlatform::kGuest, 4096) == page1); // nothing changed by the failures

    REQUIRE(p.update_data(h, TestPlatform::kGuest, 4096) == 0);
    REQUIRE(p.update_data(h, TestPlatform::kGuest + 0x3000, 8192) == 0);
    CHECK(p.peek(TestPlatform::kGuest, 4096) != page1); // the host now sees ciphertext
    CHECK(p.peek(TestPlatform::kGuest, 4096, mmu::KeyId::slot(150)) == page1);
    CHECK(p.peek(TestPlatform::kGuest + 0x3000, 8192, mmu::KeyId::slot(150)) == page2);

    // LAUNCH_MEASURE: length query first (KVM), then the real one.
    LaunchMeasureBuf q {};
    q.handle = h;
    CHECK(p.run(CommandId::LAUNCH_MEASURE, q) == st(Status::INVALID_LEN));
    CHECK(q.measure_len == 48);
    CHECK(p.guest_status(h).state == uint8_t(GuestState::LUPDATE));
    std::array<uint8_t, 48> m {};
    REQUIRE(p.measure(h, &m) == 0);
    CHECK(p.guest_status(h).state == uint8_t(GuestState::LSECRET));
    // Without a session the TIK is zero: the measurement is reproducible from the data alone.
    Bytes all = page1;
    all.insert(all.end(), page2.begin(), page2.end());
    Nonce128 mnonce {};
    std::memcpy(mnonce.data(), m.data() + 32, 16);
    Mac256 expect = launch_measure_mac(Key128 {}, 1, 51, 3, 0, sha256_of(all), mnonce);
    CHECK(std::equal(expect.begin(), expect.end(), m.begin()));
    CHECK(p.update_data(h, TestPlatform::kGuest, 4096) == st(Status::INVALID_GUEST_STATE));
    CHECK(trace_has(p, "guest 1: LUPDATE -> LSECRET (LAUNCH_MEASURE)"));
}

TEST_CASE("LAUNCH_UPDATE_VMSA: 4096 bytes, SEV-ES guests only", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.probe(kInitFlagEs) == 0);
    uint32_t h = 0, hes = 0;
    REQUIRE(p.launch_start(0, h) == 0);
    REQUIRE(p.launch_start(policy::ES, hes) == 0);
    REQUIRE(p.activate(h, 100) == 0);
    REQUIRE(p.activate(hes, 5) == 0);
    LaunchUpdateBuf b {};
    b.handle = h;
    b.paddr = TestPlatform::kGuest;
    b.length = 4096;
    CHECK(p.run(CommandId::LAUNCH_UPDATE_VMSA, b) == st(Status::UNSUPPORTED));
    b.handle = hes;
    b.length = 4080;
    CHECK(p.run(CommandId::LAUNCH_UPDATE_VMSA, b) == st(Status::INVALID_LEN));
    b.length = 4096;
    REQUIRE(p.run(CommandId::LAUNCH_UPDATE_VMSA, b) == 0);
    // Length is checked before the platform state (AMD-ASPFW order).
    REQUIRE(p.run0(CommandId::SHUTDOWN) == 0);
    b.length = 16;
    CHECK(p.run(CommandId::LAUNCH_UPDATE_VMSA, b) == st(Status::INVALID_LEN));
}

TEST_CASE("A launch with a session: measurement, secret, finish, attestation", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.probe() == 0);
    Bytes chain;
    Bytes pdh = export_pdh(p, &chain);
    uint32_t policy = 0; // debugging allowed, so the test can look inside
    auto owner = make_owner_session(pdh, policy);

    SECTION("the host changes the policy the owner chose")
    {
        uint32_t h = 0;
        CHECK(launch_start_with_session(p, owner, policy::NODBG | 0, h) == st(Status::BAD_MEASUREMENT));
        CHECK(p.platform_status().state == 1);
        CHECK(p.platform_status().guest_count == 0);
    }
    SECTION("a session made for another platform's PDH")
    {
        TestPlatform other;
        REQUIRE(other.init() == 0);
        auto foreign = make_owner_session(export_pdh(other), policy);
        uint32_t h = 0;
        CHECK(launch_start_with_session(p, foreign, policy, h) == st(Status::BAD_MEASUREMENT));
    }
    SECTION("a policy asking for a newer firmware API, or with reserved bits")
    {
        uint32_t newer = (2u << 16); // API 2.0 minimum
        auto o2 = make_owner_session(pdh, newer);
        uint32_t h = 0;
        CHECK(launch_start_with_session(p, o2, newer, h) == st(Status::POLICY_FAILURE));
        uint32_t reserved = 1u << 6;
        auto o3 = make_owner_session(pdh, reserved);
        CHECK(launch_start_with_session(p, o3, reserved, h) == st(Status::POLICY_FAILURE));
        // Without a session, the policy is not validated at all (AMD-ASPFW sev_mcmd.c LAUNCH_START with no DH
        // certificate).
        CHECK(p.launch_start(reserved | newer, h) == 0);
    }
    SECTION("a bad GODH certificate")
    {
        OwnerSession bad;
        bad.godh_cert = owner.godh_cert;
        bad.blob = owner.blob;
        bad.godh_cert[0] = 2; // version
        uint32_t h = 0;
        CHECK(launch_start_with_session(p, bad, policy, h) == st(Status::INVALID_CERTIFICATE));
    }
    SECTION("the whole launch")
    {
        uint32_t h = 0;
        REQUIRE(launch_start_with_session(p, owner, policy, h) == 0);
        REQUIRE(p.activate(h, 222) == 0);
        Bytes kernel = pattern(3 * 4096, 42);
        p.poke(TestPlatform::kGuest, kernel);
        REQUIRE(p.update_data(h, TestPlatform::kGuest, uint32_t(kernel.size())) == 0);
        std::array<uint8_t, 48> m {};
        REQUIRE(p.measure(h, &m) == 0);
        Nonce128 mnonce {};
        std::memcpy(mnonce.data(), m.data() + 32, 16);
        Mac256 expect = launch_measure_mac(owner.keys.tik, 1, 51, 3, policy, sha256_of(kernel), mnonce);
        REQUIRE(std::equal(expect.begin(), expect.end(), m.begin())); // the owner's check
        Mac256 measure {};
        std::memcpy(measure.data(), m.data(), 32);

        Bytes secret = pattern(64, 0x77);
        constexpr uint64_t kSecretPa = TestPlatform::kGuest + 0x10000;
        auto b = package_secret(p, owner, measure, secret, h, kSecretPa);

        auto tampered = b;
        tampered.guest_len = 48;
        tampered.trans_len = 48;
        CHECK(p.run(CommandId::LAUNCH_SECRET, tampered) == st(Status::BAD_MEASUREMENT));
        tampered = b;
        tampered.guest_paddr += 8;
        CHECK(p.run(CommandId::LAUNCH_SECRET, tampered) == st(Status::INVALID_ADDRESS));
        tampered = b;
        tampered.hdr_len = 0x30;
        CHECK(p.run(CommandId::LAUNCH_SECRET, tampered) == st(Status::INVALID_LEN));
        tampered = b;
        tampered.trans_len = 80;
        CHECK(p.run(CommandId::LAUNCH_SECRET, tampered) == st(Status::INVALID_LEN));
        Bytes before = p.peek(kSecretPa, 64);

        // Compressed packets are refused after the MAC check.
        auto compressed = package_secret(p, owner, measure, secret, h, kSecretPa, kPacketFlagCompressed);
        CHECK(p.run(CommandId::LAUNCH_SECRET, compressed) == st(Status::UNSUPPORTED));
        CHECK(p.peek(kSecretPa, 64) == before);

        b = package_secret(p, owner, measure, secret, h, kSecretPa);
        REQUIRE(p.run(CommandId::LAUNCH_SECRET, b) == 0);
        REQUIRE(p.finish(h) == 0);
        CHECK(p.guest_status(h).state == uint8_t(GuestState::RUNNING));
        CHECK(p.peek(kSecretPa, 64, mmu::KeyId::slot(222)) == secret);
        CHECK(p.peek(kSecretPa, 64) != secret);
        CHECK(p.run(CommandId::LAUNCH_SECRET, b) == st(Status::INVALID_GUEST_STATE));

        // DBG_DECRYPT (policy allows debugging) shows the secret to the host.
        DebugBuf d {};
        d.handle = h;
        d.src_paddr = kSecretPa;
        d.dst_paddr = TestPlatform::kData + 0xE000;
        d.length = 64;
        REQUIRE(p.run(CommandId::DBG_DECRYPT, d) == 0);
        CHECK(p.peek(TestPlatform::kData + 0xE000, 64) == secret);

        // ATTESTATION: a report over the launch digest, signed by the PEK.
        AttestationBuf a {};
        a.handle = h;
        CHECK(p.run(CommandId::ATTESTATION, a) == st(Status::INVALID_LEN));
        CHECK(a.length == 0xD0);
        a.paddr = TestPlatform::kData + 0xF000;
        for (int i = 0; i < 16; ++i)
            a.mnonce[i] = uint8_t(i + 1);
        REQUIRE(p.run(CommandId::ATTESTATION, a) == 0);
        AttestationReport r {};
        p.peek_into(a.paddr, &r, sizeof r);
        CHECK(std::equal(r.mnonce, r.mnonce + 16, a.mnonce));
        auto ld = sha256_of(kernel);
        CHECK(std::equal(ld.begin(), ld.end(), r.launch_digest));
        CHECK(r.policy == policy);
        CHECK(r.sig_usage == 0x1002);
        CHECK(r.sig_algo == 0x2);
        auto pek = SevCert::parse(std::span(chain).subspan(0, 0x824));
        AmdEcdsaSig sig {};
        std::memcpy(sig.r.data(), r.sig_r, 72);
        std::memcpy(sig.s.data(), r.sig_s, 72);
        CHECK(ecdsa_p384_verify(pek->public_key()->get(), HashAlgo::Sha256,
            std::span<const uint8_t>(reinterpret_cast<uint8_t const*>(&r), 0x34), sig));
    }
}

TEST_CASE("Policy NODBG refuses DBG_DECRYPT and DBG_ENCRYPT; checks come in AMD-ASPFW order", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.probe() == 0);
    uint32_t hn = p.running_guest(policy::NODBG, 300);
    uint32_t hd = p.running_guest(0, 301);
    DebugBuf d {};
    d.handle = hn;
    d.src_paddr = TestPlatform::kGuest;
    d.dst_paddr = TestPlatform::kData;
    d.length = 32;
    CHECK(p.run(CommandId::DBG_DECRYPT, d) == st(Status::POLICY_FAILURE));
    CHECK(p.run(CommandId::DBG_ENCRYPT, d) == st(Status::POLICY_FAILURE));
    d.src_paddr += 8;
    CHECK(p.run(CommandId::DBG_DECRYPT, d) == st(Status::INVALID_ADDRESS)); // alignment before handle/policy
    d.src_paddr -= 8;
    d.length = 33;
    CHECK(p.run(CommandId::DBG_DECRYPT, d) == st(Status::INVALID_LEN));

    // DBG_ENCRYPT then DBG_DECRYPT round trip on the debuggable guest.
    Bytes plain = pattern(256, 3);
    p.poke(TestPlatform::kData, plain);
    d = {};
    d.handle = hd;
    d.src_paddr = TestPlatform::kData;
    d.dst_paddr = TestPlatform::kGuest + 0x2000;
    d.length = 256;
    REQUIRE(p.run(CommandId::DBG_ENCRYPT, d) == 0);
    CHECK(p.peek(TestPlatform::kGuest + 0x2000, 256, mmu::KeyId::slot(301)) == plain);
    CHECK(p.peek(TestPlatform::kGuest + 0x2000, 256) != plain);
    REQUIRE(p.deactivate(hd) == 0);
    CHECK(p.run(CommandId::DBG_DECRYPT, d) == st(Status::INACTIVE));
}

TEST_CASE("Policy NOKS and key sharing", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.probe() == 0);
    uint32_t a = 0, b = 0, c = 0, n = 0;
    REQUIRE(p.launch_start(0x1, a) == 0);
    CHECK(p.launch_start(0x0, b, a) == st(Status::POLICY_FAILURE)); // policies differ
    REQUIRE(p.launch_start(0x1, b, a) == 0);                       // identical: shares a's VEK
    REQUIRE(p.launch_start(policy::NOKS, n) == 0);
    CHECK(p.launch_start(policy::NOKS, c, n) == st(Status::POLICY_FAILURE));
    CHECK(p.launch_start(0x1, c, 77) == st(Status::INVALID_GUEST));
    // The shared key is really the same key: the same plaintext encrypts identically.
    REQUIRE(p.activate(a, 400) == 0);
    REQUIRE(p.activate(b, 401) == 0);
    Bytes page = pattern(4096, 5);
    p.poke(TestPlatform::kGuest, page);
    REQUIRE(p.update_data(a, TestPlatform::kGuest, 4096) == 0);
    CHECK(p.peek(TestPlatform::kGuest, 4096, mmu::KeyId::slot(401)) == page);
    CHECK(p.guest_status(n).policy == policy::NOKS);
}

TEST_CASE("Policy bits NOSEND, DOMAIN, SEV are kept and reported; NOSEND refuses SEND_START", "[firmware]")
{
    // AMD-ASPFW sev_mcmd.c sev_mcmd_send_start: the session length query comes before the state
    // and policy checks; NOSEND is POLICY_FAILURE before any certificate is looked at.
    TestPlatform p;
    REQUIRE(p.probe() == 0);
    uint32_t pol = policy::NOSEND | policy::DOMAIN | policy::SEV;
    uint32_t h = p.running_guest(pol, 250);
    CHECK(p.guest_status(h).policy == pol);
    SendStartBuf b {};
    b.handle = h;
    CHECK(p.run(CommandId::SEND_START, b) == st(Status::INVALID_LEN));
    CHECK(b.session_len == 0x80);
    CHECK(p.run(CommandId::SEND_START, b) == st(Status::POLICY_FAILURE));
    CHECK(p.guest_status(h).state == uint8_t(GuestState::RUNNING));
}

TEST_CASE("DECOMMISSION needs DEACTIVATE first; the last guest returns the platform to INIT", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.probe() == 0);
    uint32_t h1 = p.running_guest(0, 150);
    uint32_t h2 = 0;
    REQUIRE(p.launch_start(0, h2) == 0);
    CHECK(p.platform_status().guest_count == 2);
    CHECK(p.decommission(h1) == st(Status::ACTIVE));
    REQUIRE(p.deactivate(h1) == 0);
    REQUIRE(p.decommission(h1) == 0);
    CHECK(p.decommission(h1) == st(Status::INVALID_GUEST));
    CHECK(p.platform_status().state == 2);
    REQUIRE(p.decommission(h2) == 0);
    CHECK(p.platform_status().state == 1);
    CHECK(p.platform_status().guest_count == 0);
    // Handles are reused lowest-first.
    uint32_t h3 = 0;
    REQUIRE(p.launch_start(0, h3) == 0);
    CHECK(h3 == 1);
}

TEST_CASE("GUEST_STATUS: an unknown handle is SUCCESS with state 0", "[firmware]")
{
    TestPlatform p;
    GuestStatusBuf b {};
    b.handle = 1;
    CHECK(p.run(CommandId::GUEST_STATUS, b) == st(Status::INVALID_PLATFORM_STATE));
    REQUIRE(p.init() == 0);
    b = {};
    b.handle = 5;
    b.policy = 0x1234;
    b.asid = 77;
    b.state = 9;
    REQUIRE(p.run(CommandId::GUEST_STATUS, b) == 0);
    CHECK(b.state == 0);
    CHECK(b.policy == 0x1234); // left as the caller passed them
    CHECK(b.asid == 77);
}

TEST_CASE("COPY: page copy under the guest's key", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.probe() == 0);
    uint32_t h = 0;
    REQUIRE(p.launch_start(0, h) == 0);
    CopyBuf c {};
    c.handle = h;
    c.src_paddr = TestPlatform::kGuest;
    c.dst_paddr = TestPlatform::kGuest + 0x10000;
    c.length = 8192;
    CHECK(p.run(CommandId::COPY, c) == st(Status::INACTIVE));
    REQUIRE(p.activate(h, 333) == 0);
    Bytes data = pattern(8192, 11);
    p.poke(TestPlatform::kGuest, data);
    REQUIRE(p.update_data(h, TestPlatform::kGuest, 8192) == 0);
    CopyBuf bad = c;
    bad.length = 100;
    CHECK(p.run(CommandId::COPY, bad) == st(Status::INVALID_LEN));
    bad = c;
    bad.dst_paddr += 16;
    CHECK(p.run(CommandId::COPY, bad) == st(Status::INVALID_ADDRESS));
    bad = c;
    bad.dst_paddr = TestPlatform::kDramSize - 4096;
    CHECK(p.run(CommandId::COPY, bad) == st(Status::INVALID_ADDRESS));
    REQUIRE(p.run(CommandId::COPY, c) == 0);
    CHECK(p.peek(c.dst_paddr, 8192, mmu::KeyId::slot(333)) == data);
    // Ciphertext is bound to the physical address (XTS tweak): different bytes at the new place.
    CHECK(p.peek(c.dst_paddr, 8192) != p.peek(c.src_paddr, 8192));
    // Overlapping ranges copy as memmove would.
    CopyBuf ov = c;
    ov.dst_paddr = c.src_paddr + 4096;
    REQUIRE(p.run(CommandId::COPY, ov) == 0);
    CHECK(p.peek(ov.dst_paddr, 8192, mmu::KeyId::slot(333)) == data);
    CopyBuf same = c;
    same.dst_paddr = same.src_paddr;
    CHECK(p.run(CommandId::COPY, same) == 0);
}

TEST_CASE("Commands sevemu does not implement, and unknown IDs, are INVALID_COMMAND", "[firmware]")
{
    TestPlatform p;
    REQUIRE(p.probe() == 0);
    for (uint32_t id : { 0x0Bu, 0x0Fu, 0x70u, 0x71u, 0x81u, 0x84u, 0xA0u, 0xCAu, 0x00u, 0x10u, 0xFFu, 0x7FFu }) {
        INFO("command " << id);
        CHECK(p.issue(id, TestPlatform::kCmdBuf) == st(Status::INVALID_COMMAND));
    }
    CHECK(p.platform_status().state == 1);
}

TEST_CASE("A command buffer outside DRAM is INVALID_ADDRESS and changes nothing", "[firmware]")
{
    TestPlatform p;
    CHECK(p.issue(uint32_t(CommandId::INIT), 0xFEE00000ull) == st(Status::INVALID_ADDRESS));
    CHECK(p.issue(uint32_t(CommandId::INIT), TestPlatform::kDramSize - 8) == st(Status::INVALID_ADDRESS));
    CHECK(p.platform_status().state == 0);
    REQUIRE(p.probe() == 0);
    CHECK(p.issue(uint32_t(CommandId::LAUNCH_START), ~0ull) == st(Status::INVALID_ADDRESS));
    CHECK(p.issue(uint32_t(CommandId::PLATFORM_STATUS), 1ull << 40) == st(Status::INVALID_ADDRESS));
    CHECK(p.platform_status().guest_count == 0);
    // The C-bit (51 on Milan) is masked, as AMD-ASPFW masks it.
    PlatformStatusBuf s {};
    p.poke(TestPlatform::kCmdBuf, &s, sizeof s);
    CHECK(p.issue(uint32_t(CommandId::PLATFORM_STATUS), TestPlatform::kCmdBuf | (1ull << 51)) == 0);
    CHECK(p.peek(TestPlatform::kCmdBuf, 3)[2] == 1);
}

TEST_CASE("-trace psp tells the story of a launch", "[firmware]")
{
    TestPlatform p;
    p.trace.enable("psp*");
    REQUIRE(p.probe() == 0);
    p.running_guest(0, 120);
    auto const& lines = p.trace.captured();
    auto has = [&](std::string_view s) { return std::any_of(lines.begin(), lines.end(), [&](auto const& l) { return l.find(s) != std::string::npos; }); };
    CHECK(has("INIT flags=0x0 (generated OCA PEK PDH) -> SUCCESS"));
    CHECK(has("platform UNINIT -> INIT (INIT)"));
    CHECK(has("LAUNCH_START handle=0 policy=0x0 (no session) -> handle 1 -> SUCCESS"));
    CHECK(has("platform INIT -> WORKING (LAUNCH_START)"));
    CHECK(has("guest 1: UNINIT -> LUPDATE (LAUNCH_START)"));
    CHECK(has("ACTIVATE handle=1 asid=120 -> SUCCESS"));
    CHECK(has("asid 120: clean -> allocated (pending) (guest 1)"));
    CHECK(has("LAUNCH_UPDATE_DATA handle=1 paddr=0x100000 len=4096 -> SUCCESS"));
    CHECK(has("guest 1: LSECRET -> RUNNING (LAUNCH_FINISH)"));
    CHECK(has("asid 120: allocated (pending) -> in use (guest 1)"));
}

TEST_CASE("The mailbox interrupt fires on completion only with IOC", "[firmware]")
{
    TestPlatform p;
    int before = p.irq_edges;
    p.issue(uint32_t(CommandId::PLATFORM_STATUS), TestPlatform::kCmdBuf, true);
    CHECK(p.irq_edges == before + 1);
    CHECK_FALSE(p.irq.level()); // acknowledged by the harness
    p.issue(uint32_t(CommandId::PLATFORM_STATUS), TestPlatform::kCmdBuf, false);
    CHECK(p.irq_edges == before + 1);
}
