-- The node group scenario: each request asks for one of GROUP_KEYS small objects in turn
-- (/g/k0.jpg, /g/k1.jpg, …), so a hashing proxy spreads them over its members. Prints the
-- same JSON as wrk-json.lua (run from the repository root, as bench/run.sh does).
dofile("bench/wrk-json.lua")

local keys = tonumber(os.getenv("GROUP_KEYS") or "100")
local n = 0

request = function()
  n = n + 1
  return wrk.format(nil, "/g/k" .. (n % keys) .. ".jpg")
end
