-- Argo CD health check for kubetune.dev/FineTuneJob.
-- Healthy once the job Succeeded, Degraded when it Failed, Suspended while suspended,
-- Progressing otherwise (with step, loss and ETA in the message while it runs).
local hs = { status = "Progressing", message = "Waiting for the kubetune operator" }
if obj.status == nil or obj.status.phase == nil then
  return hs
end
local st = obj.status
local gen = obj.metadata and obj.metadata.generation
if gen ~= nil and st.observedGeneration ~= nil and st.observedGeneration < gen then
  hs.message = "Waiting for the operator to observe generation " .. tostring(gen)
  return hs
end
local phase = st.phase
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Fine-tune finished"
  if st.output ~= nil and st.output.uri ~= nil then
    hs.message = hs.message .. "; model at " .. st.output.uri
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = st.message or "Fine-tune failed"
  if st.lastFailure ~= nil and st.lastFailure.reason ~= nil then
    hs.message = st.lastFailure.reason .. ": " .. (st.lastFailure.message or hs.message)
  end
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = st.message or "Suspended"
elseif phase == "Running" and st.progress ~= nil and st.progress.summary ~= nil then
  hs.message = "Running " .. st.progress.summary
  if st.progress.loss ~= nil then
    hs.message = hs.message .. ", loss " .. string.format("%.4g", st.progress.loss)
  end
  if st.progress.eta ~= nil then
    hs.message = hs.message .. ", ETA " .. st.progress.eta
  end
elseif phase == "Restarting" and st.lastFailure ~= nil and st.lastFailure.reason ~= nil then
  hs.message = "Restarting after " .. st.lastFailure.reason
else
  hs.message = st.message or phase
end
return hs
