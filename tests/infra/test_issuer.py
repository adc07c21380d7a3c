"""The local issuer of the demo and the tests: discovery, its JWKS, client-credentials tokens for
service accounts, and tokens for people who log in to a public client (the dashboard) by the
authorization-code grant with PKCE, all of which the services' verifier accepts."""

import base64
import hashlib
import json
import secrets
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi.testclient import TestClient

from infra import demo, identities
from infra.issuer import TOKEN_SECONDS, Issuer, app
from shared.access.tokens import TokenVerifier
from shared.config import Settings

URL = "http://127.0.0.1:8000"
DASHBOARD = "ucart-dashboard"
CALLBACK = "http://127.0.0.1:8003/auth/callback"
OTHER, OTHER_CALLBACK = "another-app", "http://127.0.0.1:9999/callback"


def test_a_service_account_gets_a_token_with_its_secret_only(tmp_path: Path):
    issuer = Issuer(tmp_path, URL, "ucart")
    secret = issuer.register_client("lab-system")
    client = TestClient(app(issuer))
    discovery = client.get("/.well-known/openid-configuration").json()
    assert discovery["issuer"] == URL and discovery["token_endpoint"] == f"{URL}/token"
    assert client.get("/jwks.json").json() == issuer.jwks

    form = {"grant_type": "client_credentials", "client_id": "lab-system", "client_secret": secret}
    granted = client.post("/token", data=form)
    assert granted.status_code == 200 and granted.json()["token_type"] == "Bearer"
    verifier = TokenVerifier(URL, "ucart", ("RS256",), str(tmp_path / "jwks.json"))
    assert verifier.verify(granted.json()["access_token"]).subject == "lab-system"

    assert client.post("/token", data=form | {"client_secret": "guess"}).status_code == 401
    assert client.post("/token", data=form | {"grant_type": "password"}).status_code == 400
    assert secret not in (tmp_path / "clients.json").read_text()  # only its hash is kept


def test_the_key_is_made_once_for_the_owner_only_and_kept(tmp_path: Path):
    first = Issuer(tmp_path, URL, "ucart")
    assert (tmp_path / "signing.key").stat().st_mode & 0o077 == 0
    again = Issuer(tmp_path, URL, "ucart")
    assert again.kid == first.kid and again.jwks == first.jwks


def test_a_person_gets_a_password_kept_only_hashed_and_a_new_one_replaces_it(tmp_path: Path):
    issuer = Issuer(tmp_path, URL, "ucart")
    password = issuer.register_user("coordinator-01")
    assert len(password) == 12 and issuer.check_password("coordinator-01", password)
    assert not issuer.check_password("coordinator-01", password[:-1] + ("x" if password[-1] != "x" else "y"))
    assert not issuer.check_password("investigator-01", password)  # a password is its user's only
    assert not issuer.check_password("nobody", password)

    users = tmp_path / "users.json"
    assert users.stat().st_mode & 0o077 == 0 and password not in users.read_text()
    other = issuer.register_user("monitor")
    stored = json.loads(users.read_text())
    assert set(stored) == {"coordinator-01", "monitor"}
    assert stored["coordinator-01"].startswith("scrypt$") and other not in users.read_text()

    renewed = issuer.register_user("coordinator-01")
    assert renewed != password
    assert issuer.check_password("coordinator-01", renewed) and not issuer.check_password("coordinator-01", password)
    assert issuer.check_password("monitor", other)  # the others keep theirs
    again = Issuer(tmp_path, URL, "ucart")  # kept in the directory, for the issuer's own process
    assert again.check_password("coordinator-01", renewed)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial file left


def test_the_service_accounts_secrets_are_for_the_owner_only(tmp_path: Path):
    Issuer(tmp_path, URL, "ucart").register_client("lab-system")
    assert (tmp_path / "clients.json").stat().st_mode & 0o077 == 0


# --- the authorization-code grant with PKCE ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def dashboard_issuer(directory: Path, clock: Clock | None = None) -> Issuer:
    uris = {DASHBOARD: (CALLBACK,), OTHER: (OTHER_CALLBACK,)}
    return Issuer(directory, URL, "ucart", redirect_uris=uris, clock=clock or Clock())


def browser(issuer: Issuer) -> TestClient:
    return TestClient(app(issuer), base_url=URL, follow_redirects=False)


def pkce() -> tuple[str, str]:
    """A verifier and its S256 challenge, computed here as a client would (RFC 7636 4.1, 4.2)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def request(challenge: str, **changes: str | None) -> dict[str, str]:
    asked = {
        "response_type": "code",
        "client_id": DASHBOARD,
        "redirect_uri": CALLBACK,
        "state": "st-8e2f",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "scope": "openid",
    }
    return {name: value for name, value in (asked | changes).items() if value is not None}


class Form(HTMLParser):
    """What a browser sees of the login page: its heading, labels, form and fields."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.form: dict[str, str | None] = {}
        self.labels: dict[str, str] = {}
        self.inputs: dict[str, dict[str, str | None]] = {}
        self.heading = ""
        self._label: str | None = None
        self._in_heading = False
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        attributes = dict(attrs)
        if tag == "form":
            self.form = attributes
        elif tag == "input" and attributes.get("name"):
            self.inputs[str(attributes["name"])] = attributes
        elif tag == "label":
            self._label = attributes.get("for")
        elif tag == "h1":
            self._in_heading = True

    def handle_endtag(self, tag: str) -> None:
        self._label = None if tag == "label" else self._label
        self._in_heading = False if tag == "h1" else self._in_heading

    def handle_data(self, data: str) -> None:
        if self._label:
            self.labels[self._label] = self.labels.get(self._label, "") + data
        if self._in_heading:
            self.heading += data

    def hidden(self) -> dict[str, str]:
        return {name: str(a["value"]) for name, a in self.inputs.items() if a.get("type") == "hidden"}


def log_in(client: TestClient, challenge: str, user: str, password: str, **changes: str | None) -> httpx.Response:
    """Open the login page as the dashboard sends the browser there, then submit it as a browser would."""
    page = client.get("/authorize", params=request(challenge, **changes))
    assert page.status_code == 200, page.text
    form = Form(page.text)
    return client.post(f"/{form.form['action']}", data=form.hidden() | {"user_id": user, "password": password})


def sent_back(answer: httpx.Response, to: str = CALLBACK) -> dict[str, str]:
    """The parameters of a redirect to `to` (and to nowhere else)."""
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == to
    return {name: values[0] for name, values in parse_qs(location.query, strict_parsing=True).items()}


def code_of(client: TestClient, challenge: str, user: str, password: str) -> str:
    back = sent_back(log_in(client, challenge, user, password))
    assert back["state"] == "st-8e2f"
    return back["code"]


def exchange(client: TestClient, code: str, verifier: str, /, **changes: str | None) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": DASHBOARD,
        "code_verifier": verifier,
    }
    return client.post("/token", data={name: value for name, value in (form | changes).items() if value is not None})


def refused(answer: httpx.Response, error: str, status: int = 400) -> None:
    assert (answer.status_code, answer.json()["error"]) == (status, error), answer.text
    assert answer.headers["cache-control"] == "no-store"


def test_a_person_logs_in_to_the_dashboard_and_gets_a_token_the_services_accept(tmp_path: Path):
    issuer = dashboard_issuer(tmp_path)
    password = issuer.register_user("coordinator-01")
    client = browser(issuer)
    discovery = client.get("/.well-known/openid-configuration").json()
    assert discovery["authorization_endpoint"] == f"{URL}/authorize"
    assert discovery["response_types_supported"] == ["code"]
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    assert set(discovery["grant_types_supported"]) == {"client_credentials", "authorization_code"}

    verifier, challenge = pkce()
    page = client.get("/authorize", params=request(challenge))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    form = Form(page.text)
    assert form.heading.strip() and form.form["method"] == "post"
    assert form.labels["user_id"].strip() == "User" and form.labels["password"].strip() == "Password"
    assert form.inputs["password"]["type"] == "password"
    assert form.hidden() == request(challenge)  # the request goes on with the form, as it came
    assert not {"script", "link", "img", "iframe"} & set(form.tags)  # no script, nothing fetched from elsewhere

    answer = client.post(
        f"/{form.form['action']}", data=form.hidden() | {"user_id": "coordinator-01", "password": password}
    )
    back = sent_back(answer)
    assert back["state"] == "st-8e2f" and set(back) == {"code", "state"}

    granted = exchange(client, back["code"], verifier)
    assert granted.status_code == 200, granted.text
    body = granted.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == TOKEN_SECONDS
    assert granted.headers["cache-control"] == "no-store"
    verifier_of_services = TokenVerifier(URL, "ucart", ("RS256",), str(tmp_path / "jwks.json"))
    assert verifier_of_services.verify(body["access_token"]).subject == "coordinator-01"

    refused(exchange(client, back["code"], verifier), "invalid_grant")  # a code is good once


def test_a_wrong_user_or_password_shows_the_form_again_with_401_and_issues_no_code(tmp_path: Path):
    issuer = dashboard_issuer(tmp_path)
    password = issuer.register_user("monitor")
    issuer.register_user("auditor")
    client = browser(issuer)
    _, challenge = pkce()
    for user, given in [("monitor", password + "x"), ("monitor", ""), ("auditor", password), ("nobody", password)]:
        answer = log_in(client, challenge, user, given)
        assert answer.status_code == 401 and "location" not in answer.headers
        assert "code=" not in answer.text and answer.headers["content-type"].startswith("text/html")
        again = Form(answer.text)
        assert again.hidden() == request(challenge) and again.inputs["user_id"]["value"] == user
        assert "password" in answer.text.lower() and ("Wrong" in answer.text or "Enter" in answer.text)
    assert sent_back(log_in(client, challenge, "monitor", password))["code"]  # the right one still works


def test_an_unknown_client_or_unregistered_redirect_uri_gets_a_400_page_never_a_redirect(tmp_path: Path):
    issuer = dashboard_issuer(tmp_path)
    password = issuer.register_user("sponsor")
    client = browser(issuer)
    _, challenge = pkce()
    for changes, why in [
        ({"redirect_uri": "https://attacker.example/auth/callback"}, "is not registered for client"),
        ({"redirect_uri": CALLBACK + "/more"}, "is not registered for client"),
        ({"redirect_uri": CALLBACK + "?next=https://attacker.example"}, "is not registered for client"),
        ({"redirect_uri": OTHER_CALLBACK}, "is not registered for client"),  # registered, but for another client
        ({"redirect_uri": None}, "no redirect_uri"),
        ({"client_id": "stranger"}, "Unknown client"),
        ({"client_id": None}, "client_id is missing"),
        ({"redirect_uri": "https://attacker.example/cb", "response_type": "token"}, "is not registered"),  # no error
    ]:
        answer = client.get("/authorize", params=request(challenge, **changes))
        assert answer.status_code == 400 and "location" not in answer.headers, changes
        assert answer.headers["content-type"].startswith("text/html") and "<h1>" in answer.text
        assert why in answer.text and "<form" not in answer.text, changes
    # The form's own fields are checked again: a redirect_uri changed in it gets no code either.
    page = Form(client.get("/authorize", params=request(challenge)).text)
    tampered = page.hidden() | {
        "redirect_uri": "https://attacker.example/cb",
        "user_id": "sponsor",
        "password": password,
    }
    answer = client.post("/authorize", data=tampered)
    assert answer.status_code == 400 and "location" not in answer.headers and "code=" not in answer.text


def test_a_request_without_s256_pkce_a_state_or_response_type_code_goes_back_with_an_error(tmp_path: Path):
    client = browser(dashboard_issuer(tmp_path))
    _, challenge = pkce()
    for changes, error in [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),  # which RFC 7636 takes for plain
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge": "too-short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "invalid_request"),
    ]:
        back = sent_back(client.get("/authorize", params=request(challenge, **changes)))
        assert (back["error"], back["state"]) == (error, "st-8e2f"), changes
        assert "code" not in back
    back = sent_back(client.get("/authorize", params=request(challenge, state=None)))
    assert back["error"] == "invalid_request" and "state" not in back and "code" not in back


def test_a_code_is_refused_with_a_wrong_verifier_redirect_uri_or_client_once_used_or_when_expired(tmp_path: Path):
    clock = Clock()
    issuer = dashboard_issuer(tmp_path, clock)
    password = issuer.register_user("investigator-02")
    client = browser(issuer)
    verifier, challenge = pkce()

    def code() -> str:
        return code_of(client, challenge, "investigator-02", password)

    refused(exchange(client, code(), pkce()[0]), "invalid_grant")  # another verifier
    refused(exchange(client, code(), challenge), "invalid_grant")  # the challenge itself
    refused(exchange(client, code(), verifier, redirect_uri="http://127.0.0.1:8003/elsewhere"), "invalid_grant")
    refused(exchange(client, code(), verifier, client_id=OTHER), "invalid_grant")  # issued to the dashboard
    refused(exchange(client, "made-up-" + secrets.token_urlsafe(32), verifier), "invalid_grant")
    refused(exchange(client, code(), verifier, client_id="stranger"), "invalid_client", 401)
    for missing in ("code", "redirect_uri", "client_id", "code_verifier"):
        refused(exchange(client, code(), verifier, **{missing: None}), "invalid_request")

    tried = code()  # a code tried with a wrong verifier is used up: the right one cannot follow
    refused(exchange(client, tried, pkce()[0]), "invalid_grant")
    refused(exchange(client, tried, verifier), "invalid_grant")

    used = code()
    assert exchange(client, used, verifier).status_code == 200
    refused(exchange(client, used, verifier), "invalid_grant")

    nearly = code()
    clock.now += 59
    assert exchange(client, nearly, verifier).status_code == 200  # within its 60 seconds
    expired = code()
    clock.now += 60
    refused(exchange(client, expired, verifier), "invalid_grant")


def test_the_token_endpoint_names_what_is_wrong(tmp_path: Path):
    issuer = dashboard_issuer(tmp_path)
    client = browser(issuer)
    refused(client.post("/token", data={"client_id": DASHBOARD}), "invalid_request")
    refused(client.post("/token", data={"grant_type": "password"}), "unsupported_grant_type")
    refused(client.post("/token", data={"grant_type": "client_credentials", "client_id": "lab"}), "invalid_client", 401)
    # A public client has no secret, so it gets no client-credentials token.
    refused(
        client.post("/token", data={"grant_type": "client_credentials", "client_id": DASHBOARD}), "invalid_client", 401
    )


def test_the_issuer_of_the_settings_lets_the_dashboard_come_back_to_the_follow_up_service_only(tmp_path: Path):
    settings = Settings(data_dir=tmp_path, host="127.0.0.1", followup_port=9003, oidc_issuer=URL)
    issuer = Issuer.of(settings)
    assert issuer.redirect_uris == {DASHBOARD: ("http://127.0.0.1:9003/auth/callback",)}
    assert Issuer(tmp_path / "bare", URL, "ucart").redirect_uris == {}  # no public client unless given


# --- the demo's passwords ------------------------------------------------------------------------------


def test_the_demo_people_get_passwords_kept_for_the_next_run_and_printed_with_the_dashboard(tmp_path: Path, capsys):
    settings = Settings(data_dir=tmp_path, host="127.0.0.1", followup_port=8003, oidc_issuer=URL)
    issuer = Issuer.of(settings)
    people = identities.demo_people(("01", "02"))
    passwords = identities.ensure_passwords(issuer, people)
    persons = {person.user_id for person in people} - {identities.SEEDER}
    assert set(passwords) == persons and identities.SEEDER not in json.loads(
        (tmp_path / "issuer/users.json").read_text()
    )
    assert all(issuer.check_password(user, password) for user, password in passwords.items())
    kept = tmp_path / "issuer" / identities.DEMO_PASSWORDS
    assert kept.stat().st_mode & 0o077 == 0 and identities.demo_passwords(issuer) == passwords

    # The next run shows the same ones; a person whose password no longer works gets a new one.
    monitor = issuer.register_user("monitor")
    again = identities.ensure_passwords(Issuer.of(settings), people)
    assert again == passwords | {"monitor": again["monitor"]} and again["monitor"] not in (
        monitor,
        passwords["monitor"],
    )
    assert issuer.check_password("monitor", again["monitor"]) and identities.demo_passwords(issuer) == again

    demo.print_how_to_log_in(settings, issuer, people)
    printed = capsys.readouterr().out
    assert "http://127.0.0.1:8003/ " in printed and "Bearer" in printed
    rows = {line.split("│")[1].strip(): line for line in printed.splitlines() if line.count("│") == 4}
    assert all(again[user] in rows[user] for user in persons)
    assert "coordinator, site 02" in rows["coordinator-02"] and identities.SEEDER not in rows
