"""The chat page of an inference grant, against real broker and worker processes: a person with
no key logs in (a single-use login link, as `escrow admin login-link` makes), opens the chat of
their grant from /me, and talks to the model over two turns; the answers are the engine's own
greedy ones on the original files; the turns are counted as usage, and no text is kept. Someone
else cannot open the page, and a revoked grant stops the next turn."""

from __future__ import annotations

import html
import re

import pytest
import requests
from conftest import NAME, Hosted, ask, broker_escrow, make_person


def _login(hosted: Hosted, user_id: int) -> requests.Session:
    from broker.adapters.db.models import User
    from broker.domain.principals import OPERATOR
    from broker.services import sessions

    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        secret = sessions.create_login_link(uow, OPERATOR, uow.session.get(User, user_id))
        uow.commit()
    browser = requests.Session()
    url = f"{hosted.broker.url}/auth/link/{secret}"
    page = browser.get(url, timeout=30)
    done = browser.post(url, data={"csrf_token": _csrf(page.text)}, timeout=30)
    assert done.status_code == 200 and done.url.endswith("/me"), done.status_code
    return browser


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _turns(page: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r'<p class="content"[^>]*>(.*?)</p>', page,
                                                 re.S)]


TOKENS = 12  # the longest answer asked for on the page (the tiny model's context is short)


def _say(browser: requests.Session, url: str, page: str, message: str,
         tokens: int | str = TOKENS) -> requests.Response:
    conversation = html.unescape(re.search(r'name="conversation" value="([^"]*)"', page)
                                 .group(1))
    return browser.post(url, timeout=120, data={
        "csrf_token": _csrf(page), "conversation": conversation, "message": message,
        "max_tokens": str(tokens)})


def test_a_person_talks_to_the_model_on_the_chat_page(hosted):
    from broker.hosting.engine import Message, Sampling, load_engine

    direct = load_engine(hosted.files)
    lena = make_person(hosted.broker, "lena", key=False)
    grant = ask(hosted.broker, lena, "inference")
    browser = _login(hosted, lena.user_id)
    me = browser.get(f"{hosted.broker.url}/me", timeout=30).text
    assert f'href="/me/chat/{grant}"' in me
    url = f"{hosted.broker.url}/me/chat/{grant}"
    page = browser.get(url, timeout=30)
    assert page.status_code == 200 and NAME in page.text and _turns(page.text) == []

    first = _say(browser, url, page.text, "Who decides?")
    assert first.status_code == 200, first.text
    said = [Message("user", "Who decides?")]
    expected = direct.generate(direct.chat_prompt(said),
                               Sampling(max_tokens=TOKENS)).text()
    assert _turns(first.text) == ["Who decides?", expected]

    second = _say(browser, url, first.text, "And then?")
    said += [Message("assistant", expected), Message("user", "And then?")]
    again = direct.generate(direct.chat_prompt(said),
                            Sampling(max_tokens=TOKENS)).text()
    assert _turns(second.text) == ["Who decides?", expected, "And then?", again]

    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        from broker.domain.principals import Principal, PrincipalKind
        from broker.services import hosted_usage

        [mine] = hosted_usage.my_hosted_grants(
            uow, Principal(kind=PrincipalKind.USER, id=str(lena.user_id)))
        assert mine["today"]["requests"] == 2 and mine["today"]["output_tokens"] > 0

    too_long = _say(browser, url, second.text, "More?", 500)  # beyond the tiny context
    assert too_long.status_code == 422 and "context" in html.unescape(too_long.text)
    assert len(_turns(too_long.text)) == 4  # the conversation so far stays

    other = _login(hosted, make_person(hosted.broker, "omar", key=False).user_id)
    assert other.get(url, timeout=30).status_code == 404

    with broker_escrow(hosted.broker) as escrow, escrow.uow() as uow:
        from broker.domain.principals import OPERATOR
        from broker.services import grants

        grants.revoke(uow, OPERATOR, grant)
    stopped = _say(browser, url, second.text, "Still there?")
    assert stopped.status_code == 403
    assert "was revoked" in html.unescape(stopped.text)
    assert _turns(stopped.text) == ["Who decides?", expected, "And then?", again]


@pytest.mark.parametrize("conversation", ['[{"role": "system", "content": "x"}]', "nonsense",
                                          '{"role": "user"}'])
def test_a_conversation_altered_by_hand_is_refused(conversation):
    from broker.errors import InvalidInput
    from broker.services import hosted_chat

    with pytest.raises(InvalidInput, match="not one this page made"):
        hosted_chat.conversation(conversation)
