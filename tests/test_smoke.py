import io


def test_login_store_retrieve(live_ftp, make_account, recorder):
    account = make_account("alice")
    ftp = live_ftp.client("alice")
    ftp.storbinary("STOR hello.txt", io.BytesIO(b"hello"))
    data = io.BytesIO()
    ftp.retrbinary("RETR hello.txt", data.write)
    ftp.quit()
    assert data.getvalue() == b"hello"
    with open(f"{account.home_path}/hello.txt", "rb") as fh:
        assert fh.read() == b"hello"
    recorder.wait_for("ftp_client_disconnected")
    assert recorder.names() == [
        "ftp_client_connected",
        "ftp_login",
        "ftp_file_received",
        "ftp_file_sent",
        "ftp_logout",
        "ftp_client_disconnected",
    ]
