// sevemu fuzzing — a fixed platform identity and fixed keys, so that seed corpora made by
// gen_corpus.cpp (certificates, GODH certificates, session blobs) still match the platform a
// harness builds on every run and on every machine. TEST KEYS ONLY: the RSA key below was made
// with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048` for sevemu's fuzzing and
// signs nothing outside it; the P-384 scalars are SHA-384 of fixed labels.
//
// What the harnesses know and use as their oracle: these keys signed exactly the reference
// bodies below and nothing else, and the reference session blob is the one wrap for the
// reference GODH key. A certificate body that verifies against one of these keys but is not a
// reference body, or a LAUNCH_START that accepts another session, is a forgery: a bug.
#pragma once

#include "../firmware/fw_harness.h"
#include "firmware/amd_cert.h"
#include "firmware/crypto.h"
#include "firmware/persistent.h"
#include "firmware/sev_cert.h"

#include <openssl/bio.h>
#include <openssl/pem.h>

#include <cstring>
#include <fstream>
#include <string_view>

namespace sevemu::fuzz {

using namespace sevemu::firmware;
namespace fs = std::filesystem;

inline char const kTestRsaPem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDHi2dAZ7dIKcJi\n"
    "zaEWFtSPyPZLaSX22apaYl7BrtR6BVEGXYepNPkUxYU9P3v3t+k1gf2RA/EbOEHa\n"
    "gNPf2bAFHVOolskAM/NN+OR8rqIWdq5qOlWwgmxm4j9BjyieU1KaERyUch6mSGJl\n"
    "mLZtsWNalp6FTcyHf5Zm6p2ue+HRRbB+CqB/MgzFHOj/Uiwy66airvOPto2UVFcZ\n"
    "9O9QSD4vkf3Xf+fDYTycngQz/j2JRHm1LBql95HWZ+l+NsHfSZ8agDGp2zeD2VBf\n"
    "UK9ueHstfL5XBJ3cbfspMP+5yKqCUtydZHQD80wqOyNQ4DAVu5sUT5gtNucik/4O\n"
    "ez8w7127AgMBAAECggEADm5gMZc5TnMUB4M+6Chkh7WNTReLUwFGQbJ65IpZUYMl\n"
    "lflDq2gVBNHizfLTwK7rTcmwkJahZEo68QDU0eFIyps8BqWeXxu4DTvigmXle7cU\n"
    "7BfQmgBaCKLKLQVGdxTS6ijcppu46GZfFLaTqEvmQedCCvqnv7uUIVihvhG1hiXh\n"
    "lNDwXeCRp8UCUvHxnojtKSAlFPyA2+C5MHEVlxHBx8iDsrCPRzW0sQraMUzpIAcW\n"
    "n+g+mtsPkd/wyt0opGlJLyJOBncJ7Ops5PbfKJSIJQmB1LDKpiaHICwqNTRJhb3g\n"
    "a5cjTUGVhkHwpWtWYolDv5yUmVPakanTbB+REcuC4QKBgQD54SIuTF0JLDR/0z+5\n"
    "dNYi6dcn6goNnFf/p1K9Auoak1maNOijCn+TVfrd2sUsb2WOUqGPpWNTa0sFuo3a\n"
    "GS+F3ADxI9o8W52Kg9Ln8IFwn+E2OJ2eTQWwIwit/rcT86M2fRLbMnt7/zmeeBkH\n"
    "VEaWKBnGJr77gpJfqIaDQQJLMQKBgQDMbqU6G5egnE+NF7++NTAD1hVEqdrsOYHR\n"
    "+YFfkv0fjFMioR5fb0gcGf5q9C2u6P8FglNQl3QMLCk488BWXDAV32i9BB5zX3N4\n"
    "QbsqolT7vbcaZCcMJe4RA1nmY3O+PJ63YospbHinN56lToaI/ou+NZhYaaV+i9/b\n"
    "QTpvfYhkqwKBgEcuX9tKe5I6WnYzSkrdQobNkDHZlKWN7O9xzbr0EpYhdXvdKIwR\n"
    "WIgzDPSX9mUTEp35YfaWiXXg8Y0fOHtxgz0hj88hhHB/NKCZrsHNnEHl+XTFqfjH\n"
    "PiCPylAuaB6x38OM24s/lTecW+CNm6uf0T/DCpyMuwjQiDvhuPe41BtxAoGAeenG\n"
    "GRgZXYu6GS8/hsQbRT5nYpJU3ykQVVMRJxj2YNkDPxSMk2c+vpt10PybPcLvSq7E\n"
    "1rvrVdMEJlWeryG8/15DDO2m5zDWILI6VxuFyLcDufZeHu2DwpuYAj/u51UpZb2b\n"
    "tfFdJoOR1Y01x/7dAWre1mLycbwinJOSsKhRLY8CgYAwbGrG0UUTn95xOW5PwIWw\n"
    "OjjE6r+6aoXYcFyaFlmNss8oPVNT9jYf4aaHNJ3nPvN4THHjwp9heChXMefkHguf\n"
    "ohUDgGTUUoTTPq9oJR+lqjeVOH2+HSjk9JNHAuJi8I4PjTfwtk0tHA3fpIW4C6Vg\n"
    "c9fe6Zoy4j7UgtMd1bDIpQ==\n"
    "-----END PRIVATE KEY-----\n"
    ;

inline Bytes label_bytes(std::string_view s) { return Bytes(s.begin(), s.end()); }

inline PKey fixed_p384(std::string_view label)
{
    auto d = sha384(label_bytes(label));
    auto k = p384_from_private(d);
    if (!k)
        std::abort();
    return std::move(*k);
}

inline PKey fixed_rsa()
{
    BIO* bio = BIO_new_mem_buf(kTestRsaPem, int(sizeof kTestRsaPem - 1));
    EVP_PKEY* key = bio ? PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr) : nullptr;
    BIO_free(bio);
    if (!key)
        std::abort();
    return PKey(key);
}

inline ChipUniqueKey fixed_cuk()
{
    auto d = sha256(label_bytes("sevemu-fuzz chip-unique key"));
    ChipUniqueKey k {};
    std::memcpy(k.data(), d.data(), k.size());
    return k;
}

inline FirmwareParams fixed_params() { return FirmwareParams::for_model(CpuModel::Milan); }

inline CertSigner signer(SevUsage u, SevAlgo a, PKey key) { return CertSigner { u, a, std::move(key) }; }

// The reference certificates, all made from the fixed keys (bodies are deterministic; ECDSA and
// RSA-PSS signatures are not, which does not matter: signatures are checked, never compared).
struct Reference {
    SevCert oca, pek, pdh, cek, godh;
    AmdCert ark, ask;
};

inline SevCert must(Result<SevCert, CertError> r)
{
    if (!r)
        std::abort();
    return std::move(*r);
}
inline AmdCert must(Result<AmdCert, CertError> r)
{
    if (!r)
        std::abort();
    return std::move(*r);
}

inline Reference make_reference()
{
    auto p = fixed_params();
    auto oca_key = fixed_p384("sevemu-fuzz OCA");
    auto pek_key = fixed_p384("sevemu-fuzz PEK");
    auto pdh_key = fixed_p384("sevemu-fuzz PDH");
    auto godh_key = fixed_p384("sevemu-fuzz GODH");
    auto cek_key = derive_cek(fixed_cuk());
    if (!cek_key)
        std::abort();
    auto oca = must(SevCert::make_ec(p.api_major, p.api_minor, SevUsage::OCA, SevAlgo::ECDSA_SHA256, oca_key.get()));
    auto pek = must(SevCert::make_ec(p.api_major, p.api_minor, SevUsage::PEK, SevAlgo::ECDSA_SHA256, pek_key.get()));
    auto pdh = must(SevCert::make_ec(p.api_major, p.api_minor, SevUsage::PDH, SevAlgo::ECDH_SHA256, pdh_key.get()));
    auto cek = must(SevCert::make_ec(p.api_major, p.api_minor, SevUsage::CEK, SevAlgo::ECDSA_SHA256, cek_key->get()));
    auto godh = must(SevCert::make_ec(0, 0, SevUsage::PDH, SevAlgo::ECDH_SHA256, godh_key.get()));
    // Signing order and slots as the firmware signs them (cmd_platform.cpp generate_oca_pek_pdh).
    if (!oca.sign(0, signer(SevUsage::OCA, SevAlgo::ECDSA_SHA256, fixed_p384("sevemu-fuzz OCA")))
        || !pek.sign(0, signer(SevUsage::OCA, SevAlgo::ECDSA_SHA256, fixed_p384("sevemu-fuzz OCA")))
        || !pek.sign(1, signer(SevUsage::CEK, SevAlgo::ECDSA_SHA256, std::move(*cek_key)))
        || !pdh.sign(0, signer(SevUsage::PEK, SevAlgo::ECDSA_SHA256, fixed_p384("sevemu-fuzz PEK"))))
        std::abort();
    // ARK and ASK share the one test RSA key (the ASK's certifying_id names the ARK).
    AmdKeyId ark_id = PlatformStore::test_key_id(CpuModel::Naples, AmdKeyUsage::ARK);
    AmdKeyId ask_id = PlatformStore::test_key_id(CpuModel::Naples, AmdKeyUsage::ASK);
    auto rsa = fixed_rsa();
    auto ark = must(AmdCert::build(AmdKeyUsage::ARK, ark_id, ark_id, rsa.get()));
    auto ask = must(AmdCert::build(AmdKeyUsage::ASK, ask_id, ark_id, rsa.get()));
    if (!ark.sign(rsa.get()) || !ask.sign(rsa.get()))
        std::abort();
    auto ask_signer = ask.as_signer();
    if (!ask_signer)
        std::abort();
    ask_signer->key = fixed_rsa();
    if (!cek.sign(0, *ask_signer))
        std::abort();
    return Reference { std::move(oca), std::move(pek), std::move(pdh), std::move(cek), std::move(godh), std::move(ark),
        std::move(ask) };
}

// The session the reference guest owner (GODH) makes for the fixed PDH: fixed nonce, wrap IV,
// TEK and TIK, so it is the same bytes on every run for a given policy.
inline TransportKeys reference_transport_keys()
{
    TransportKeys k;
    auto t = sha256(label_bytes("sevemu-fuzz TEK/TIK"));
    std::memcpy(k.tek.data(), t.data(), 16);
    std::memcpy(k.tik.data(), t.data() + 16, 16);
    return k;
}

inline SessionBlob reference_session(uint32_t policy)
{
    auto godh = fixed_p384("sevemu-fuzz GODH");
    auto pdh = fixed_p384("sevemu-fuzz PDH");
    auto pdh_pub = public_only(pdh.get());
    auto z = ecdh_p384(godh.get(), pdh_pub->get());
    if (!z)
        std::abort();
    Nonce128 nonce {};
    Iv128 iv {};
    auto n = sha256(label_bytes("sevemu-fuzz nonce/iv"));
    std::memcpy(nonce.data(), n.data(), 16);
    std::memcpy(iv.data(), n.data() + 16, 16);
    return wrap_session(*z, nonce, reference_transport_keys(), iv, policy);
}

// Where the platform directories go: tmpfs when there is one, since the firmware fsyncs every
// NV write. scripts/fuzz.sh names a directory of its own, removed after the run even when a
// harness aborts.
inline fs::path fuzz_tmp_base()
{
    char const* chosen = std::getenv("SEVEMU_FUZZ_TMP");
    return chosen && *chosen      ? fs::path(chosen)
        : fs::exists("/dev/shm") ? fs::path("/dev/shm")
                                 : fs::temp_directory_path();
}

// Writes the fixed identity into a platform directory: chip.id with the fixed CUK and nv.bin
// sealed with the fixed OCA/PEK/PDH (self-owned), so INIT loads it instead of generating new keys.
inline void write_fixed_identity(fs::path const& dir, Reference const& ref)
{
    auto cuk = fixed_cuk();
    {
        std::ofstream id(dir / "chip.id");
        id << "# sevemu fuzzing: fixed test identity\nversion 1\ncuk " << to_hex(cuk) << "\n";
    }
    PersistentState st;
    st.ext_owned = false;
    st.oca_priv = *p384_private_scalar(fixed_p384("sevemu-fuzz OCA").get());
    st.pek_priv = *p384_private_scalar(fixed_p384("sevemu-fuzz PEK").get());
    st.pdh_priv = *p384_private_scalar(fixed_p384("sevemu-fuzz PDH").get());
    st.oca_cert = ref.oca.serialize();
    st.pek_cert = ref.pek.serialize();
    st.pdh_cert = ref.pdh.serialize();
    auto image = nv_seal(st, cuk);
    if (!image)
        std::abort();
    std::ofstream nv(dir / "nv.bin", std::ios::binary);
    nv.write(reinterpret_cast<char const*>(image->data()), std::streamsize(image->size()));
}

// The fixed platform, rebuilt for every input so that each run is reproducible from its input
// alone: the NV file is put back to its first image when a command changed it, then a power
// cycle gives new DRAM and a new firmware on the same identity. The directory is removed when
// the process ends (libFuzzer exits through exit(), which destroys the harness's static).
class FuzzPlatform {
public:
    FuzzPlatform() : m_ref(make_reference()), m_dir("fuzz", fuzz_tmp_base())
    {
        write_fixed_identity(m_dir.path, m_ref);
        m_nv = *read_file(m_dir.path / "nv.bin");
    }
    Reference const& ref() const { return m_ref; }

    test::TestPlatform& fresh()
    {
        auto nv = read_file(m_dir.path / "nv.bin");
        if (!nv || *nv != m_nv) {
            std::ofstream out(m_dir.path / "nv.bin", std::ios::binary | std::ios::trunc);
            out.write(reinterpret_cast<char const*>(m_nv.data()), std::streamsize(m_nv.size()));
        }
        m_platform.reset();
        m_platform = std::make_unique<test::TestPlatform>(fixed_params(), m_dir.path);
        m_platform->trace.set_capture(false);
        return *m_platform;
    }

private:
    Reference m_ref;
    test::TempDir m_dir;
    Bytes m_nv;
    std::unique_ptr<test::TestPlatform> m_platform;
};

} // namespace sevemu::fuzz
