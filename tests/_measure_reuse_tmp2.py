import os, json
from tests.test_data_channel_security import PASSWORD, payload, read, curl, tls_cert  # noqa

def test_active(ftp_server, tls_cert, make_account, tmp_path):
    account = make_account("alice")
    live = ftp_server(certfile=tls_cert.certfile, keyfile=tls_cert.keyfile, tls_require_session_reuse=True)
    data = payload(2 * 1024 * 1024, seed=99); (tmp_path / "a.bin").write_bytes(data)
    out = {}
    for flag in ("-", "127.0.0.1:0", "lo"):
        c = curl("--ssl-reqd", "-k", "-u", f"alice:{PASSWORD}", "-P", flag, "-T", str(tmp_path / "a.bin"), f"ftp://127.0.0.1:{live.port}/a.bin")
        c2 = curl("--ssl-reqd", "-k", "-u", f"alice:{PASSWORD}", "-P", flag, "-o", str(tmp_path / "b.bin"), f"ftp://127.0.0.1:{live.port}/a.bin")
        ok = c.returncode == 0 and c2.returncode == 0 and read(os.path.join(account.home_path, "a.bin")) == data and (tmp_path / "b.bin").read_bytes() == data
        out[flag] = [ok, (c.stderr + c2.stderr).decode()[-150:]]
    with open("/tmp/notes/measure.jsonl", "a") as fh:
        fh.write(json.dumps({"reuse": True, "client": "curl active", **out}) + "\n")
