#!/usr/bin/env bash
# Sampling on the bundled generator, two builds of `ponder-engine generate` on the same
# weights and prompts: n samples (T = 0.8, 400-token cap) of each question's prompt, one
# invocation per question, builds alternating. Prints one line per (run, build, n): the
# generated tokens and seconds summed over the questions, and their rate. How issue 15's
# "today's" figures on the bundled generator were taken; docs/benchmarks.md, "Sampling on
# the weights issue 15 was filed on".
#
#   OLD=/path/to/old/ponder-engine NEW=target/release/ponder-engine MODEL=/path/to/arith-gen \
#       bench/generate-ab.sh > results.txt
#
# The questions are two per level of the independent evaluation sampler (seed 7's first),
# in the bundled prompt format ("Q: {question}\n"). NEW_ARGS / OLD_ARGS add flags on one
# side only.
set -uo pipefail
: "${OLD:?the ponder-engine binary of the old build}"
NEW=${NEW:-target/release/ponder-engine}
M=${MODEL:?a generator model directory both builds load}
RUNS=${RUNS:-5}
NS=${NS:-1 16 64}
NEW_ARGS=${NEW_ARGS:-}
OLD_ARGS=${OLD_ARGS:-}
QUESTIONS=(
  '95-37' '17+33'
  '(20+95)*15' '1*65*36'
  '36+8*5*66' '26+76*88-20'
  '(71+(71+(51+82)*70))' '2*(30+86*(4+45))'
  '(1+60)+83+(69+1)*7' '9+(31-(22-(90-80))+93)'
  '57+27+(43-37)*(94+82)+38' '77+(97+((48+45)*(14+27)+42))'
)
for run in $(seq 1 "$RUNS"); do
  for label in old new; do
    bin=$OLD; args=$OLD_ARGS
    [ "$label" = new ] && bin=$NEW && args=$NEW_ARGS
    for n in $NS; do
      tokens=0; ms=0
      for q in "${QUESTIONS[@]}"; do
        # shellcheck disable=SC2086 # the extra flags split into words on purpose
        line=$("$bin" generate --model "$M" --prompt "Q: $q
" -n "$n" --temperature 0.8 --max-tokens 400 --seed "$run" $args 2>&1 | grep 'generated in')
        # "13 prompt tokens, 80 generated in 39.39ms (2031.0 tok/s)"
        read -r t d <<< "$(sed -E 's/.* ([0-9]+) generated in ([0-9.]+)(m?s).*/\1 \2\3/' <<< "$line")"
        case $d in
          *ms) d=${d%ms} ;;
          *s) d=$(awk "BEGIN { print ${d%s} * 1000 }") ;;
        esac
        tokens=$((tokens + t)); ms=$(awk "BEGIN { print $ms + $d }")
      done
      echo "$run $label n=$n $tokens tokens in $ms ms: $(awk "BEGIN { printf \"%.0f\", $tokens / ($ms / 1000) }") tok/s"
    done
  done
done
