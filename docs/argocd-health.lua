-- Argo CD health check of finetune.dev/FinetuneJob.
-- Install it in the argocd-cm ConfigMap under
--   resource.customizations.health.finetune.dev_FinetuneJob
-- (see docs/gitops.md). Tested by tests/unit/test_argocd_health.py against tests/fixtures/argocd/.
local hs = {}

local function condition(status, ctype)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function describe(status, fallback)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

local status = obj.status
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase
if phase == nil then
  -- No phase yet: fall back to the terminal conditions.
  local failed = condition(status, "Failed")
  local succeeded = condition(status, "Succeeded")
  if failed ~= nil and failed.status == "True" then
    phase = "Failed"
  elseif succeeded ~= nil and succeeded.status == "True" then
    phase = "Succeeded"
  end
end

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe(status, "Finetune succeeded")
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(status, "Finetune failed")
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe(status, "Finetune suspended")
elseif phase == "Queued" then
  hs.status = "Progressing"
  local msg = describe(status, "Waiting for quota")
  if status.queuePosition ~= nil then
    msg = msg .. " (queue position " .. tostring(status.queuePosition) .. ")"
  end
  hs.message = msg
else
  -- Pending, Running, or a phase this check does not know yet.
  hs.status = "Progressing"
  hs.message = describe(status, "Finetune " .. string.lower(phase or "pending"))
end
return hs
