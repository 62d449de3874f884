"""Suite `lifecycle` (tests/tests/runners.rs): max_loaded_models, keep_alive, racing first loads,
memory budget evictions."""

from checks.common import *  # noqa: F401,F403


@check("lifecycle")
def max_loaded_models_evicts_and_keep_alive_unloads():
    # Configured: max_loaded_models = 1; `--model` keeps idle for 1 s, `--victim` forever.
    c = client()
    c.chat.completions.create(model=args.victim, messages=MESSAGES, max_tokens=2)
    other = model_entry(args.victim)
    assert other["loaded"] and other["expires_in_s"] is None, other
    c.chat.completions.create(model=args.model, messages=MESSAGES, max_tokens=2)
    wait_gone(other["runner_pid"])
    assert model_entry(args.victim)["status"] == "unloaded"
    assert metric(f'minerva_model_evictions{{model="{args.victim}"}}') == 1
    entry = model_entry(args.model)
    assert entry["loaded"] and entry["expires_in_s"] in (0, 1), entry
    wait_gone(entry["runner_pid"], seconds=5)
    assert model_entry(args.model)["status"] == "unloaded"
    assert metric(f'minerva_model_unloads{{model="{args.model}"}}') == 1
    r = c.chat.completions.create(model=args.model, messages=MESSAGES, max_tokens=2)
    assert r.choices[0].message.content is not None
    assert metric(f'minerva_model_loads{{model="{args.model}"}}') == 2
