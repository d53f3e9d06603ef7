class EchoChannel < ApplicationCable::Channel
  def echo(data)
    transmit({ "echo" => data["text"] })
  end
end
