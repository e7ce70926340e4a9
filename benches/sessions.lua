-- wrk script for benches/compare.sh's sticky leg: every request carries one of the Cookie header
-- values given after `--` (one session each), in turn, so that each backend holds a session.
-- The requests are formatted once, in init: wrk only hands them out.
local requests, n = {}, 0

function init(args)
  for _, cookie in ipairs(args) do
    requests[#requests + 1] = wrk.format(nil, nil, { Cookie = cookie })
  end
  assert(#requests > 0, "give the sessions' Cookie header values after --")
end

function request()
  n = n % #requests + 1
  return requests[n]
end
